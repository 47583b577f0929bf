"""Render the recsys Helm chart with the real `helm` binary and query the result.

Why a module and not test code: `recsys k8s render/validate` and the tests share it, and both need the same
answer to "what does this values file produce".
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# platform/recsys/platform/k8s/chart.py -> repo root is four levels above the package folder.
REPO_ROOT = Path(__file__).resolve().parents[4]


class HelmError(RuntimeError):
    """helm exited non-zero; `stderr` holds helm's own message (e.g. the values.schema.json violation)."""

    def __init__(self, args: list[str], stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} failed:\n{stderr.strip()}")
        self.stderr = stderr


@dataclass(frozen=True)
class ChartPaths:
    """Where the chart, its helm binary and its CRD schemas live (defaults: this repository's layout)."""

    repo_root: Path = REPO_ROOT
    chart_dir: Path = field(default=REPO_ROOT / "helm" / "recsys")
    helm: Path = field(default=REPO_ROOT / ".tools" / "bin" / "helm")
    crd_schema_dir: Path = field(default=REPO_ROOT / "helm" / "crds-schemas")

    @property
    def production_values(self) -> Path:
        return self.chart_dir / "values-production.yaml"


@dataclass
class Rendered:
    """The objects of one `helm template` run, with lookups by kind and name."""

    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"].get("name") == name]
        if len(found) != 1:
            names = [o["metadata"].get("name") for o in self.of_kind(kind)]
            raise LookupError(f"expected one {kind} named {name!r}, found {names}")
        return found[0]

    def serve_config(self) -> dict[str, Any]:
        """The RayService's serveConfigV2, parsed (it is a YAML string inside the object)."""
        return yaml.safe_load(self.get("RayService")["spec"]["serveConfigV2"])

    def training_job_manifests(self) -> dict[str, dict[str, Any]]:
        """RayJob manifests stored in the "<fullname>-training-jobs" ConfigMap, keyed by job name."""
        for cm in self.of_kind("ConfigMap"):
            if cm["metadata"]["name"].endswith("-training-jobs"):
                return {k.removesuffix(".yaml"): yaml.safe_load(v) for k, v in (cm.get("data") or {}).items()}
        return {}


def run_helm(args: list[str], paths: ChartPaths | None = None, timeout_s: float = 120) -> str:
    paths = paths or ChartPaths()
    if not paths.helm.exists():
        raise FileNotFoundError(f"{paths.helm} not found: run scripts/install_helm.sh first")
    proc = subprocess.run([str(paths.helm), *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise HelmError(args, proc.stderr)
    return proc.stdout


def render_chart(
    values_files: Iterable[Path | str] = (),
    set_values: Mapping[str, Any] | None = None,
    release: str = "recsys",
    namespace: str = "recsys",
    paths: ChartPaths | None = None,
    set_json: Mapping[str, Any] | None = None,
) -> Rendered:
    """`helm template` the chart; `set_values` become `--set key=value` (helm's own type parsing),
    `set_json` become `--set-json key=<json>` (exact types, e.g. a float)."""
    paths = paths or ChartPaths()
    args = ["template", release, str(paths.chart_dir), "--namespace", namespace, *values_args(values_files,
                                                                                             set_values, set_json)]
    return Rendered([d for d in yaml.safe_load_all(run_helm(args, paths)) if d])


def values_args(
    values_files: Iterable[Path | str] = (),
    set_values: Mapping[str, Any] | None = None,
    set_json: Mapping[str, Any] | None = None,
) -> list[str]:
    """helm's -f/--set/--set-json arguments, shared by `helm template` and `helm install/upgrade`."""
    args: list[str] = []
    for f in values_files:
        args += ["-f", str(f)]
    args += [f"--set={k}={v}" for k, v in (set_values or {}).items()]
    args += [f"--set-json={k}={json.dumps(v)}" for k, v in (set_json or {}).items()]
    return args
