"""Drive the local control plane of scripts/k8s_testenv.sh and talk to it with kubectl and helm.

Why a module: the tests (tests/k8s) and anyone checking the chart by hand against the test server need the same
small things: start/stop the server on free ports, `helm install/upgrade` the chart, read objects back as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys.platform.k8s.chart import REPO_ROOT, ChartPaths, values_args

SCRIPT = REPO_ROOT / "scripts" / "k8s_testenv.sh"
# Everything the chart can render, read back in one `kubectl get` (versions as the 1.20 test server serves them:
# autoscaling/v1 would be kubectl's preferred HPA version, which drops the v2 metrics block).
CHART_KINDS = (
    "deployments.apps,statefulsets.apps,services,configmaps,secrets,serviceaccounts,"
    "roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,networkpolicies.networking.k8s.io,"
    "poddisruptionbudgets.policy,horizontalpodautoscalers.v2beta2.autoscaling,cronjobs.batch,"
    "ingresses.networking.k8s.io,rayservices.ray.io,rayjobs.ray.io,inferenceservices.serving.kserve.io"
)


class CommandError(RuntimeError):
    """kubectl/helm exited non-zero; `stderr` holds the tool's (and the API server's) message."""

    def __init__(self, cmd: Sequence[str], proc: subprocess.CompletedProcess) -> None:
        super().__init__(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip()}")
        self.stderr = proc.stderr
        self.stdout = proc.stdout


def free_port(pair_offset: int | None = None) -> int:
    """A free TCP port on 127.0.0.1 (and port+pair_offset free too, for etcd's peer port)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if pair_offset is None or port + pair_offset > 65535:
            if pair_offset is None:
                return port
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + pair_offset))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair found")


@dataclass
class Objects:
    """Objects read back from the API server, with lookups by kind and name."""

    items: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.items if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        if len(found) != 1:
            raise LookupError(f"no {kind} {name!r}; have {[o['metadata']['name'] for o in self.of_kind(kind)]}")
        return found[0]

    def serve_config(self) -> dict[str, Any]:
        (rs,) = self.of_kind("RayService")
        return yaml.safe_load(rs["spec"]["serveConfigV2"])

    def training_jobs(self) -> dict[str, dict[str, Any]]:
        cm = self.get("ConfigMap", "recsys-training-jobs")
        return {k.removesuffix(".yaml"): yaml.safe_load(v) for k, v in cm["data"].items()}


@dataclass
class KubeEnv:
    """The running control plane: kubeconfig, and kubectl/helm bound to it."""

    kubeconfig: Path
    run_dir: Path
    port: int
    env: dict[str, str]
    chart: ChartPaths = field(default_factory=ChartPaths)
    extras: dict[str, Any] = field(default_factory=dict)  # observations a session wants to keep

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "apiserver.crt"

    def run(self, cmd: Sequence[str], stdin: str | None = None, check: bool = True,
            timeout_s: float = 180) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, env=self.env,
                              timeout=timeout_s, check=False)
        if check and proc.returncode != 0:
            raise CommandError(cmd, proc)
        return proc

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["kubectl", *args], stdin=stdin, check=check)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([str(self.chart.helm), *args], check=check)

    def create(self, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        """POST new objects (cheaper than server-side apply for the multi-MB CRDs on a fresh server)."""
        ns = ["-n", namespace] if namespace else []
        self.kubectl("create", "--validate=false", *ns, "-f", "-",
                     stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def apply(self, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", "--server-side", "--force-conflicts", "--validate=false", *ns, "-f", "-",
                     stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def wait_established(self, crd_names: Sequence[str], timeout_s: float = 120) -> None:
        """Wait until the API server serves the given CRDs (condition Established). Polls, because kubectl
        1.35's `wait` errors out on a 1.20 CRD whose status has no conditions yet."""
        deadline = time.monotonic() + timeout_s
        while True:
            out = json.loads(self.kubectl("get", *[f"crd/{n}" for n in crd_names], "-o", "json").stdout)
            items = out.get("items", [out])
            established = {
                i["metadata"]["name"] for i in items
                if any(c["type"] == "Established" and c["status"] == "True"
                       for c in (i.get("status") or {}).get("conditions") or [])
            }
            if established >= set(crd_names):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not established after {timeout_s}s: {set(crd_names) - established}")
            time.sleep(0.2)

    def get_objects(self, namespace: str, kinds: str = CHART_KINDS) -> Objects:
        out = self.kubectl("get", kinds, "-n", namespace, "-o", "json").stdout
        return Objects(json.loads(out)["items"])

    def new_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        return name

    def install(self, namespace: str, values_files: Sequence[Path | str] = (), set_values: dict | None = None,
                set_json: dict | None = None, release: str = "recsys", upgrade: bool = False,
                check: bool = True) -> subprocess.CompletedProcess:
        """A real `helm install` (or `helm upgrade`) of the chart; Helm 4 applies server-side."""
        verb = ["upgrade"] if upgrade else ["install"]
        return self.helm(*verb, release, str(self.chart.chart_dir), "-n", namespace,
                         *values_args(values_files, set_values, set_json), check=check)



class TestEnvError(RuntimeError):
    """scripts/k8s_testenv.sh failed; `installable` is False when the server could not be installed/built."""

    def __init__(self, message: str, installable: bool) -> None:
        super().__init__(message)
        self.installable = installable


def _script(args: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout_s, check=False)


def start_testenv(run_dir: Path, install_timeout_s: float = 1800) -> KubeEnv:
    """Install (prebuilt: seconds; build: ~10 min) and start etcd + kube-apiserver on free ports."""
    port, etcd_port = free_port(), free_port(pair_offset=10)
    env = {**os.environ, "K8S_TESTENV_RUN": str(run_dir), "K8S_TESTENV_PORT": str(port),
           "K8S_TESTENV_ETCD_PORT": str(etcd_port)}
    installed = _script(["install"], env, install_timeout_s)
    if installed.returncode != 0:
        tail = "\n".join(installed.stderr.strip().splitlines()[-15:])
        raise TestEnvError(f"scripts/k8s_testenv.sh install failed:\n{tail}", installable=False)
    started = _script(["start"], env, 180)
    if started.returncode != 0:
        _script(["stop"], env, 60)
        raise TestEnvError(f"scripts/k8s_testenv.sh start failed:\n{started.stderr[-3000:]}", installable=True)
    # the last stdout line is `export KUBECONFIG=... PATH=...:$PATH`
    exports = dict(part.split("=", 1) for part in started.stdout.strip().splitlines()[-1].split()[1:])
    env["KUBECONFIG"] = exports["KUBECONFIG"]
    env["PATH"] = exports["PATH"].replace("$PATH", os.environ.get("PATH", ""))
    for kind in ("CACHE", "CONFIG", "DATA"):  # keep helm's repository caches out of $HOME
        env[f"HELM_{kind}_HOME"] = str(run_dir / f"helm-{kind.lower()}")
    return KubeEnv(kubeconfig=Path(env["KUBECONFIG"]), run_dir=run_dir, port=port, env=env)


def stop_testenv(kube: KubeEnv) -> None:
    _script(["stop"], kube.env, 60)
