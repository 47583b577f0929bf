"""A real Kubernetes API server for the chart and `recsys k8s` tests (one per test session).

`scripts/k8s_testenv.sh` runs etcd + kube-apiserver v1.20.2 on 127.0.0.1 (token auth, RBAC on): every object
is admitted, validated (built-in types and CRD schemas), defaulted and stored as on a cluster's API server.
There is no kubelet and no controller, so pods never start and no KubeRay operator writes status: tests that
need a RayService/RayJob status write it through the status subresource, as the operator would.

The server boots in a background thread as soon as collection shows that k8s tests will run, so its start-up
and CRD establishment (mostly waiting, ~15 s of server CPU) overlap the tests that run before tests/k8s.
A server that cannot be installed or built, or that does not start, fails every k8s test with the installer's
own message (never a skip: CI must not pass without the control plane).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from recsys.platform.k8s.crds import CRDS, load_crds
from recsys.platform.k8s.testenv import KubeEnv, Objects, TestEnvError, start_testenv, stop_testenv

_boot: dict[str, object] = {}


def _boot_testenv(run_dir: Path) -> KubeEnv:
    """Start the server, note what `recsys k8s status` says before KubeRay exists, install the CRDs."""
    env = start_testenv(run_dir)
    try:
        # a subprocess, not CliRunner: CliRunner swaps sys.stdout, which other tests own while this thread runs
        env.extras["status_without_kuberay"] = subprocess.run(
            [sys.executable, "-m", "recsys.platform.k8s.cli", "status", "--kubeconfig", str(env.kubeconfig),
             "-n", "default"], capture_output=True, text=True, timeout=120, check=False)
        crds, _source = load_crds()
        env.create(crds)
        env.wait_established([spec.name for spec in CRDS])
    except BaseException:
        stop_testenv(env)
        raise
    return env


def _start_boot() -> Future:
    if "future" not in _boot:
        run_dir = Path(tempfile.mkdtemp(prefix="recsys-k8s-testenv-"))
        _boot["run_dir"] = run_dir
        _boot["pool"] = pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="k8s-testenv")
        _boot["future"] = pool.submit(_boot_testenv, run_dir)
    return _boot["future"]  # type: ignore[return-value]


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(i.get_closest_marker("k8s") for i in session.items):
        _start_boot()


def _shutdown() -> None:
    future = _boot.pop("future", None)
    if future is not None:
        with contextlib.suppress(Exception):  # a failed boot has cleaned up after itself
            stop_testenv(future.result())
        shutil.rmtree(_boot.pop("run_dir"), ignore_errors=True)  # type: ignore[arg-type]
        _boot.pop("pool").shutdown()  # type: ignore[union-attr]


def pytest_sessionfinish(session: pytest.Session) -> None:
    _shutdown()  # also when the session ends before the k8s tests ran (e.g. -x on an earlier failure)


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeEnv]:
    """etcd + kube-apiserver for the whole session, with the KubeRay and KServe CRDs installed."""
    try:
        env = _start_boot().result()
    except TestEnvError as exc:
        what = "could not be installed or built" if not exc.installable else "was installed but did not start"
        pytest.fail(f"the local Kubernetes control plane for the k8s tests {what} (scripts/setup.sh installs it "
                    f"with `bash scripts/k8s_testenv.sh install`):\n{exc}")
    yield env
    _shutdown()


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
