"""Read KubeRay RayService/RayJob status and submit training RayJobs through the Kubernetes API.

Talks to a real cluster with the official `kubernetes` client (kubeconfig, or the pod's service account with
`in_cluster=True`). Nothing here is faked: tests swap only the HTTP connection pool for recorded responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, Field

RAY_GROUP = "ray.io"
RAY_VERSION = "v1"
TRAINING_JOB_LABEL = "recsys.io/training-job"
DEFAULT_SERVE_PORT = 8000
DASHBOARD_PORT = 8265


class ClusterError(RuntimeError):
    """A Kubernetes call failed; the message is meant for the CLI user (no traceback)."""


class K8sSettings(BaseModel):
    """How to reach the cluster and which release to look at (the `recsys k8s` options)."""

    namespace: str = Field("default", min_length=1)
    release: str | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False

    def label_selector(self) -> str | None:
        return f"app.kubernetes.io/instance={self.release}" if self.release else None


def connect(settings: K8sSettings) -> client.ApiClient:
    """An ApiClient from the pod's service account or from kubeconfig; clear error when neither works."""
    try:
        if settings.in_cluster:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        return config.new_client_from_config(
            config_file=str(settings.kubeconfig) if settings.kubeconfig else None, context=settings.context
        )
    except (ConfigException, FileNotFoundError, OSError) as exc:
        kubeconfig = settings.kubeconfig or "~/.kube/config"
        where = "in-cluster service account" if settings.in_cluster else f"kubeconfig ({kubeconfig})"
        raise ClusterError(f"cannot load Kubernetes credentials from {where}: {exc}") from exc


def api_error_message(exc: ApiException) -> str:
    """The API server's own message (`Status.message`) when it sent one."""
    try:
        body = json.loads(exc.body or "{}")
        detail = body.get("message") or exc.reason
    except (TypeError, ValueError):
        detail = exc.reason
    return f"HTTP {exc.status}: {detail}"


@dataclass
class AppStatus:
    """A Serve application inside a RayService, with its deployments' statuses."""

    name: str
    status: str
    message: str = ""
    deployments: dict[str, str] = field(default_factory=dict)


@dataclass
class RayServiceStatus:
    """What an operator wants from `kubectl get rayservice -o yaml`, condensed."""

    name: str
    namespace: str
    ready: bool
    reason: str
    upgrade_in_progress: bool
    active_cluster: str
    pending_cluster: str
    serve_endpoints: int
    applications: list[AppStatus]
    endpoints: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RayJobStatus:
    """A RayJob's job status (Ray side) and deployment status (KubeRay side)."""

    name: str
    namespace: str
    training_job: str
    job_status: str
    deployment_status: str
    start_time: str
    end_time: str
    message: str
    ray_cluster: str
    dashboard_url: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def summarize_rayservice(obj: dict[str, Any]) -> RayServiceStatus:
    """Condense a RayService object (as returned by the API) into a RayServiceStatus."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    name, namespace = meta["name"], meta.get("namespace", "")
    ready_cond = _condition(status, "Ready")
    if ready_cond is not None:
        ready = ready_cond.get("status") == "True"
        reason = ready_cond.get("reason", "")
    else:  # KubeRay < 1.3 reports only serviceStatus
        ready = status.get("serviceStatus") == "Running"
        reason = status.get("serviceStatus", "Unknown")
    upgrade = _condition(status, "UpgradeInProgress")
    active = status.get("activeServiceStatus") or {}
    pending = status.get("pendingServiceStatus") or {}
    apps = [
        AppStatus(
            name=app_name,
            status=app.get("status", "UNKNOWN"),
            message=app.get("message", ""),
            deployments={d: s.get("status", "UNKNOWN") for d, s in (app.get("serveDeploymentStatuses") or {}).items()},
        )
        for app_name, app in sorted((active.get("applicationStatuses") or {}).items())
    ]
    serve_svc = spec.get("serveService") or {}
    svc_name = (serve_svc.get("metadata") or {}).get("name") or f"{name}-serve-svc"
    ports = (serve_svc.get("spec") or {}).get("ports") or []
    port = next((p["port"] for p in ports if p.get("name") == "serve"), DEFAULT_SERVE_PORT)
    endpoints = {
        "serve": f"http://{svc_name}.{namespace}.svc.cluster.local:{port}",
        "dashboard": f"http://{name}-head-svc.{namespace}.svc.cluster.local:{DASHBOARD_PORT}",
    }
    return RayServiceStatus(
        name=name,
        namespace=namespace,
        ready=ready,
        reason=reason,
        upgrade_in_progress=bool(upgrade and upgrade.get("status") == "True"),
        active_cluster=active.get("rayClusterName", ""),
        pending_cluster=pending.get("rayClusterName", ""),
        serve_endpoints=int(status.get("numServeEndpoints") or 0),
        applications=apps,
        endpoints=endpoints,
    )


def summarize_rayjob(obj: dict[str, Any]) -> RayJobStatus:
    meta, status = obj["metadata"], obj.get("status") or {}
    return RayJobStatus(
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        training_job=(meta.get("labels") or {}).get(TRAINING_JOB_LABEL, ""),
        job_status=status.get("jobStatus", "") or "PENDING",
        deployment_status=status.get("jobDeploymentStatus", "") or "New",
        start_time=status.get("startTime", ""),
        end_time=status.get("endTime", ""),
        message=status.get("message", ""),
        ray_cluster=status.get("rayClusterName", ""),
        dashboard_url=status.get("dashboardURL", ""),
    )


class RayResources:
    """RayService/RayJob custom objects and the training job templates, via the Kubernetes API."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def _list(self, namespace: str, plural: str, label_selector: str | None) -> list[dict[str, Any]]:
        try:
            found = self.custom.list_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, plural, label_selector=label_selector
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(
                    f"{plural}.{RAY_GROUP}/{RAY_VERSION} not found in the cluster: is the KubeRay operator installed?"
                ) from exc
            raise ClusterError(f"listing {plural} in {namespace}: {api_error_message(exc)}") from exc
        return list(found.get("items") or [])

    def rayservices(self, namespace: str, label_selector: str | None = None) -> list[RayServiceStatus]:
        return [summarize_rayservice(o) for o in self._list(namespace, "rayservices", label_selector)]

    def rayjobs(self, namespace: str, label_selector: str | None = None) -> list[RayJobStatus]:
        jobs = [summarize_rayjob(o) for o in self._list(namespace, "rayjobs", label_selector)]
        return sorted(jobs, key=lambda j: j.start_time or "~", reverse=True)

    def job_templates(self, namespace: str, configmap: str) -> dict[str, dict[str, Any]]:
        """RayJob manifests from the chart's "<fullname>-training-jobs" ConfigMap, keyed by job name."""
        try:
            cm = self.core.read_namespaced_config_map(configmap, namespace)
        except ApiException as exc:
            raise ClusterError(f"reading ConfigMap {namespace}/{configmap}: {api_error_message(exc)}") from exc
        return {key.removesuffix(".yaml"): yaml.safe_load(text) for key, text in (cm.data or {}).items()}

    def create_rayjob(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, "rayjobs", manifest)
        except ApiException as exc:
            raise ClusterError(f"creating RayJob in {namespace}: {api_error_message(exc)}") from exc


def rayjobs_from_documents(documents: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """RayJob manifests from YAML documents: RayJobs themselves, or the chart's training-jobs ConfigMap
    (so both `helm template` output and a single RayJob file work), keyed by training job name."""
    found: dict[str, dict[str, Any]] = {}
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "RayJob":
            labels = (doc.get("metadata") or {}).get("labels") or {}
            key = labels.get(TRAINING_JOB_LABEL) or (doc.get("metadata") or {}).get("name") or f"job{len(found)}"
            found[key] = doc
        elif doc.get("kind") == "ConfigMap" and doc["metadata"].get("name", "").endswith("-training-jobs"):
            for key, text in (doc.get("data") or {}).items():
                found.setdefault(key.removesuffix(".yaml"), yaml.safe_load(text))
    return found


def prepare_submission(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of a RayJob manifest that gets a fresh server-generated name on each submission."""
    if manifest.get("apiVersion") != f"{RAY_GROUP}/{RAY_VERSION}" or manifest.get("kind") != "RayJob":
        raise ClusterError(
            f"expected a {RAY_GROUP}/{RAY_VERSION} RayJob, got {manifest.get('apiVersion')} {manifest.get('kind')}"
        )
    body = json.loads(json.dumps(manifest))
    meta = body.setdefault("metadata", {})
    name = meta.pop("name", None)
    if not meta.get("generateName"):
        meta["generateName"] = f"{name or 'recsys-train'}-"
    meta.pop("namespace", None)
    meta.pop("resourceVersion", None)
    meta.pop("uid", None)
    body.pop("status", None)
    return body
