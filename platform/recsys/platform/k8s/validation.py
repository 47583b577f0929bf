"""Offline validation of rendered manifests: no cluster needed.

Core kinds go through kubernetes-validate (the Kubernetes OpenAPI schemas it bundles); custom resources
(RayService, RayJob, InferenceService) through jsonschema with the CRD schemas shipped in helm/crds-schemas.
CRD schemas leave objects open and the API server prunes unknown fields, so they are closed here first
(what `kubectl apply --validate=strict` would reject, this rejects).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

DEFAULT_KUBERNETES_VERSION = "1.32.0"

# (apiVersion, kind) -> schema file name in helm/crds-schemas
CRD_SCHEMA_FILES: dict[tuple[str, str], str] = {
    ("ray.io/v1", "RayService"): "ray.io_v1_rayservice.json",
    ("ray.io/v1", "RayJob"): "ray.io_v1_rayjob.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_v1beta1_inferenceservice.json",
}


@dataclass(frozen=True)
class Problem:
    """One validation failure, addressed by object and field path."""

    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.path or '<root>'}: {self.message}"


def close_object_schemas(node: Any) -> Any:
    """Copy of an OpenAPI schema where objects listing `properties` reject unknown fields."""
    if isinstance(node, dict):
        out = {k: close_object_schemas(v) for k, v in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [close_object_schemas(v) for v in node]
    return node


@lru_cache(maxsize=8)
def crd_validator(schema_dir: Path, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((schema_dir / CRD_SCHEMA_FILES[(api_version, kind)]).read_text())
    return jsonschema.Draft7Validator(close_object_schemas(schema))


def is_custom_resource(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in CRD_SCHEMA_FILES


def object_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("name") or f"{meta.get('generateName', '')}*"


def validate_object(
    obj: dict[str, Any], schema_dir: Path, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[Problem]:
    """All problems of one object (empty list: valid)."""
    kind, name = obj.get("kind", "?"), object_name(obj)
    if is_custom_resource(obj):
        validator = crd_validator(schema_dir, obj["apiVersion"], kind)
        return [
            Problem(kind, name, "/".join(map(str, e.path)), e.message)
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        ]
    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [Problem(kind, name, "/".join(map(str, exc.path)), exc.message)]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [Problem(kind, name, "", exc.message)]
    return []


def ray_pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Pod templates embedded in a RayService/RayJob: head, each worker group, the job submitter."""
    spec = obj["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec")
    found = [("head", cluster["headGroupSpec"]["template"])]
    found += [(f"worker:{g['groupName']}", g["template"]) for g in cluster.get("workerGroupSpecs", [])]
    if "submitterPodTemplate" in spec:
        found.append(("submitter", spec["submitterPodTemplate"]))
    return found


def validate_ray_pod_templates(
    obj: dict[str, Any], kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[Problem]:
    """Check KubeRay pod templates against Kubernetes' own PodTemplate schema (the CRD embeds an older copy)."""
    problems = []
    for role, template in ray_pod_templates(obj):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        for p in validate_object(wrapped, Path("."), kubernetes_version):
            problems.append(Problem(obj["kind"], f"{object_name(obj)}[{role}]", p.path, p.message))
    return problems


def validate_objects(
    objects: list[dict[str, Any]], schema_dir: Path, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[Problem]:
    problems: list[Problem] = []
    for obj in objects:
        problems += validate_object(obj, schema_dir, kubernetes_version)
        if obj.get("apiVersion") == "ray.io/v1":
            problems += validate_ray_pod_templates(obj, kubernetes_version)
    return problems
