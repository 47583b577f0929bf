"""A real Kubernetes API server for the chart and `recsys k8s` tests (one per test session).

`scripts/k8s_testenv.sh` runs etcd + kube-apiserver v1.20.2 on 127.0.0.1 (token auth, RBAC on): every object
is admitted, validated (built-in types and CRD schemas), defaulted and stored as on a cluster's API server.
There is no kubelet and no controller, so pods never start and no KubeRay operator writes status: tests that
need a RayService/RayJob status write it through the status subresource, as the operator would.

The session skips (with the installer's own message) only when the server cannot be installed or built; a
server that is installed but fails to start fails the tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from recsys.platform.k8s.cli import cli
from recsys.platform.k8s.crds import CRDS, load_crds
from recsys.platform.k8s.testenv import KubeEnv, Objects, TestEnvError, start_testenv, stop_testenv


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Iterator[KubeEnv]:
    """etcd + kube-apiserver for the whole session, with the KubeRay and KServe CRDs installed."""
    try:
        env = start_testenv(tmp_path_factory.mktemp("k8s-testenv"))
    except TestEnvError as exc:
        if not exc.installable:
            pytest.skip(f"no Kubernetes API server for the k8s tests: {exc}")
        pytest.fail(str(exc))
    try:
        # before the CRDs exist: what `recsys k8s status` says on a cluster without KubeRay (kept for a test)
        env.extras["status_without_kuberay"] = CliRunner().invoke(
            cli, ["status", "--kubeconfig", str(env.kubeconfig), "-n", "default"])
        crds, _source = load_crds()
        env.create(crds)
        env.wait_established([spec.name for spec in CRDS])
        yield env
    finally:
        stop_testenv(env)


@pytest.fixture(scope="session")
def kube_api(kube):
    """The official Python client against the test server (used to write status as the operator would)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kube.kubeconfig))


@pytest.fixture(scope="session")
def default_release(kube) -> tuple[str, Objects]:
    """The chart installed with its default values (release "recsys"), every object read back."""
    ns = kube.new_namespace("defaults")
    kube.install(ns)
    return ns, kube.get_objects(ns)


PRODUCTION_SECRETS = {
    "recsys-redis": {"redis-url": "rediss://:pw@redis.prod.internal:6380/0",
                     "feast-connection-string": "redis.prod.internal:6380,password=pw,ssl=true"},
    "recsys-api-key": {"api-key": "0123456789abcdef"},
    "recsys-model-store-credentials": {"AWS_REGION": "eu-west-1"},
}


@pytest.fixture(scope="session")
def production_release(kube) -> tuple[str, Objects]:
    """The chart installed with values-production.yaml after creating the Secrets it references."""
    ns = kube.new_namespace("production")
    kube.create([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
                 for name, data in PRODUCTION_SECRETS.items()], namespace=ns)
    kube.install(ns, [kube.chart.production_values])
    return ns, kube.get_objects(ns)


@pytest.fixture
def in_cluster_as(kube, tmp_path, monkeypatch):
    """Make `--in-cluster` authenticate as a real ServiceAccount of the test server, the way a pod would:
    a token from the TokenRequest API in the service-account files, KUBERNETES_SERVICE_HOST/PORT set."""
    import kubernetes.config.incluster_config as incluster

    def _as(namespace: str, service_account: str) -> str:
        token = kube.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
        (tmp_path / "token").write_text(token)
        monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
        monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(kube.ca_file))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube.port))
        return f"system:serviceaccount:{namespace}:{service_account}"

    return _as
