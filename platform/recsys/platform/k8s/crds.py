"""The KubeRay and KServe CustomResourceDefinitions the chart's objects need, ready for an API server.

Why a module: the chart renders RayService, RayJob and InferenceService objects; a real API server only
admits them once their CRDs are installed. By default the CRDs are rebuilt from the schemas this repository
carries (helm/crds-schemas: the upstream `openAPIV3Schema` of the served version, descriptions dropped, kept
equal to upstream by tests/helm/test_crd_schemas.py). That needs no folder outside the repository and is the
cheaper install: the upstream files also carry v1alpha1 and every description, which on the 1.20 test server
roughly doubles the time until the CRDs are Established (measured: 30 s vs 54 s under heavy machine load).
`load_crds(shared_dir=...)` installs the upstream files from ../shared/crds instead.

Older API servers (the 1.20 test server) reject two things newer CRDs use, so `for_api_server` removes them:
`x-kubernetes-validations` (CEL rules, unknown before 1.25; a 1.20 server would drop them anyway) and
`default: ""` on reference names (1.20 reads the empty default as null and rejects it as "must be of type
string"; an empty default only fills in an empty name, so no object the chart renders is affected).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recsys.platform.k8s.chart import REPO_ROOT

SHARED_CRD_DIR = REPO_ROOT.parent / "shared" / "crds"
SCHEMA_DIR = REPO_ROOT / "helm" / "crds-schemas"


@dataclass(frozen=True)
class CrdSpec:
    """Names of one custom resource: enough to rebuild its CRD around a stored schema."""

    group: str
    version: str
    kind: str
    plural: str
    upstream_file: str  # relative to the shared CRD folder
    schema_file: str  # in helm/crds-schemas

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"


CRDS: tuple[CrdSpec, ...] = (
    CrdSpec(
        "ray.io", "v1", "RayService", "rayservices", "kuberay/ray.io_rayservices.yaml", "ray.io_v1_rayservice.json"
    ),
    CrdSpec("ray.io", "v1", "RayJob", "rayjobs", "kuberay/ray.io_rayjobs.yaml", "ray.io_v1_rayjob.json"),
    CrdSpec(
        "serving.kserve.io",
        "v1beta1",
        "InferenceService",
        "inferenceservices",
        "kserve/serving.kserve.io_inferenceservices.yaml",
        "serving.kserve.io_v1beta1_inferenceservice.json",
    ),
)


def _strip(node: Any) -> Any:
    """Copy of a schema tree without CEL rules and without empty (`""` or null) defaults.

    A list-map key must have a default or be required (1.20 checks this too), so a key whose empty default
    is removed becomes required: only entries without that key (e.g. an imagePullSecret without a name,
    which upstream would fill with "") are refused.
    """
    if isinstance(node, list):
        return [_strip(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _strip(v)
        for k, v in node.items()
        if k != "x-kubernetes-validations" and not (k == "default" and v in (None, ""))
    }
    items = out.get("items")
    if isinstance(items, dict) and isinstance(items.get("properties"), dict):
        for key in node.get("x-kubernetes-list-map-keys") or []:
            prop = items["properties"].get(key) or {}
            if "default" not in prop and key not in (items.get("required") or []):
                items["required"] = [*(items.get("required") or []), key]
    return out


def for_api_server(crd: dict[str, Any]) -> dict[str, Any]:
    """A CRD an older API server (1.20) accepts, with every structural rule it knows left in place."""
    return _strip(crd)


def crd_from_schema(spec: CrdSpec, schema: dict[str, Any]) -> dict[str, Any]:
    """A namespaced CRD serving one version with the given openAPIV3Schema and a status subresource
    (as the upstream KubeRay/KServe CRDs declare)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": spec.name},
        "spec": {
            "group": spec.group,
            "names": {"kind": spec.kind, "listKind": f"{spec.kind}List", "plural": spec.plural,
                      "singular": spec.kind.lower()},
            "scope": "Namespaced",
            "versions": [{"name": spec.version, "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": schema}, "subresources": {"status": {}}}],
        },
    }


def load_crds(shared_dir: Path | None = None, schema_dir: Path = SCHEMA_DIR) -> tuple[list[dict], str]:
    """The CRDs for RayService, RayJob and InferenceService, and where they came from.

    Rebuilt from the repository's schemas, or the upstream files from `shared_dir` (e.g. SHARED_CRD_DIR)
    when given and complete.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    if shared_dir is not None and all((shared_dir / s.upstream_file).is_file() for s in CRDS):
        crds = [yaml.load((shared_dir / s.upstream_file).read_text(), Loader=loader) for s in CRDS]  # noqa: S506
        return [for_api_server(c) for c in crds], f"upstream CRDs from {shared_dir}"
    crds = [crd_from_schema(s, json.loads((schema_dir / s.schema_file).read_text())) for s in CRDS]
    return [for_api_server(c) for c in crds], f"CRDs rebuilt from the schemas in {schema_dir}"
