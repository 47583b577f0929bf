# syntax=docker/dockerfile:1
# Platform image: Ray head/workers (serving + training), Feast server, materializer, training submitter.
# Build: docker build -t registry.example.com/ml/recsys-platform:0.1.0 .
# Not built on the CI machines here (no Docker engine); tests/helm/test_dockerfile.py lints it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU-only torch first: the default PyPI wheel for Linux is the multi-GB CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform/ platform/
COPY features/ features/
COPY training/ training/
COPY serving/ serving/
COPY experiments/ experiments/
COPY console/ console/
RUN pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
# wget: KubeRay's injected health probes call it inside Ray containers. haproxy: Ray Serve's optional
# HTTP ingress (Helm `serving.haproxyIngress`; ~2x the proxy's throughput on 2 cores, docs/serving.md).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget haproxy \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 recsys \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin recsys
COPY --from=build /opt/venv /opt/venv
# HOME=/tmp: the chart mounts an emptyDir there and keeps the root filesystem read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    RAY_USAGE_STATS_ENABLED=0
WORKDIR /app
USER 10001:10001
# 8000 Serve HTTP, 8265 Ray dashboard, 6379 Ray GCS, 10001 Ray client, 6566 Feast server, 8080 KServe predictor
EXPOSE 8000 8265 6379 10001 6566 8080
CMD ["recsys", "--help"]
