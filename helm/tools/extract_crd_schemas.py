"""Extract the object schemas the chart's custom resources must satisfy from upstream CRDs.

Why: the repo ships the schemas (helm/crds-schemas/) so tests validate rendered RayService, RayJob and
InferenceService objects offline. Only `spec.versions[<served version>].schema.openAPIV3Schema` is kept,
with `description` fields dropped (they do not affect validation and are ~80% of the bytes).

Usage: python helm/tools/extract_crd_schemas.py [CRD_DIR] [OUT_DIR]
       (defaults: ../shared/crds relative to the repo root, helm/crds-schemas)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# (CRD file relative to CRD_DIR, API version to extract, output file name)
SOURCES: list[tuple[str, str, str]] = [
    ("kuberay/ray.io_rayservices.yaml", "v1", "ray.io_v1_rayservice.json"),
    ("kuberay/ray.io_rayjobs.yaml", "v1", "ray.io_v1_rayjob.json"),
    ("kserve/serving.kserve.io_inferenceservices.yaml", "v1beta1", "serving.kserve.io_v1beta1_inferenceservice.json"),
]


def strip_descriptions(node: Any) -> Any:
    """Return a copy of an OpenAPI schema without `description` keys (validation is unchanged)."""
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description" or not isinstance(v, str)}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def extract_schema(crd_path: Path, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one served version of a CustomResourceDefinition file."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on these 1-2 MB files
    crd = yaml.load(crd_path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return strip_descriptions(entry["schema"]["openAPIV3Schema"])
    raise KeyError(f"{crd_path}: no version {version!r}")


def render_schema(schema: dict[str, Any]) -> str:
    """Stable serialisation so a re-extraction diff shows real upstream changes only."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n"


def main(argv: list[str]) -> int:
    crd_dir = Path(argv[1]) if len(argv) > 1 else REPO_ROOT.parent / "shared" / "crds"
    out_dir = Path(argv[2]) if len(argv) > 2 else REPO_ROOT / "helm" / "crds-schemas"
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel, version, out_name in SOURCES:
        text = render_schema(extract_schema(crd_dir / rel, version))
        (out_dir / out_name).write_text(text)
        print(f"{out_name}: {len(text) / 1024:.0f} KiB from {rel} ({version})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
