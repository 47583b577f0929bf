"""`recsys k8s status` against the real test API server.

The RayService comes from the chart's real install (tests/k8s/conftest.py `default_release`); RayJobs are
created from the chart's job templates. No KubeRay operator runs here, so each test writes the status the
operator would (through the status subresource, validated by KubeRay's CRD schema on the server).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client

from recsys.platform.k8s.cli import cli
from recsys.platform.k8s.cluster import prepare_submission

# one API server per session; its first use may build it (~10 min) when no prebuilt binary is cached
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

GROUP, VERSION = "ray.io", "v1"


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _condition(ctype: str, status: str, reason: str, message: str = "-") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-20T09:16:40Z", "observedGeneration": 1}


READY = {
    "activeServiceStatus": {
        "applicationStatuses": {"recsys": {"status": "RUNNING", "serveDeploymentStatuses": {
            "Ingress": {"status": "HEALTHY"}, "RetrievalShard0": {"status": "HEALTHY"},
            "RetrievalShard1": {"status": "HEALTHY"},
            "Ranker": {"status": "UPSCALING", "message": "Upscaling from 2 to 3 replicas."}}}},
        "rayClusterName": "recsys-7xq2n",
    },
    "pendingServiceStatus": {},
    "conditions": [_condition("Ready", "True", "NonZeroServeEndpoints", "Number of serve endpoints is greater than 0"),
                   _condition("UpgradeInProgress", "False", "NoPendingCluster")],
    "numServeEndpoints": 3,
    "serviceStatus": "Running",
}
UPGRADING = {
    "activeServiceStatus": {},
    "pendingServiceStatus": {
        "applicationStatuses": {"recsys": {"status": "DEPLOYING", "message": "Deploying app 'recsys'."}},
        "rayClusterName": "recsys-canary-p4w8z",
    },
    "conditions": [_condition("Ready", "False", "Initializing"),
                   _condition("UpgradeInProgress", "True", "BothActivePendingClustersExist")],
    "numServeEndpoints": 0,
}


@pytest.fixture(scope="module")
def custom(kube_api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


def _set_status(custom, ns: str, plural: str, name: str, status: dict[str, Any]) -> None:
    """Write status as KubeRay would: replace the status subresource (the server validates it)."""
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    obj["status"] = status
    custom.replace_namespaced_custom_object_status(GROUP, VERSION, ns, plural, name, obj)


@pytest.fixture(scope="module")
def cluster_state(kube, default_release, custom):
    """The default release's RayService plus a second release's RayService and three training RayJobs."""
    ns, objs = default_release
    other = copy.deepcopy(objs.get("RayService", "recsys"))
    other["metadata"] = {"name": "canary", "labels": {**other["metadata"]["labels"],
                                                      "app.kubernetes.io/instance": "canary"}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "rayservices", other)
    _set_status(custom, ns, "rayservices", "canary", UPGRADING)
    templates = objs.training_jobs()
    jobs = {}
    for key, template, status in [
        ("succeeded", templates["retrieval"], {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete",
                                               "startTime": "2026-11-23T03:00:06Z", "endTime": "2026-11-23T03:38:51Z",
                                               "message": "Job finished successfully."}),
        ("running", templates["ranking"], {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running",
                                           "startTime": "2026-11-23T03:39:02Z"}),
        ("failed", templates["ranking"], {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed",
                                          "startTime": "2026-11-22T03:39:00Z", "endTime": "2026-11-22T03:41:17Z",
                                          "message": "Job entrypoint command failed with exit code 2, last "
                                                     "available logs: Error: no such option: --epoch"}),
    ]:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "rayjobs", prepare_submission(template))
        name = created["metadata"]["name"]
        _set_status(custom, ns, "rayjobs", name, {**status, "rayClusterName": f"{name}-c6v9s"})
        jobs[key] = name
    return ns, jobs


def test_status_text_shows_readiness_apps_endpoints_and_jobs(kube, custom, cluster_state):
    ns, jobs = cluster_state
    _set_status(custom, ns, "rayservices", "recsys", READY)
    result = _invoke("status", "--kubeconfig", str(kube.kubeconfig), "-n", ns, "--release", "recsys")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"RayService {ns}/recsys: Ready (NonZeroServeEndpoints)" in out
    assert "canary" not in out  # --release is a label selector the server applies
    assert "active cluster: recsys-7xq2n" in out and "serve endpoints: 3" in out
    assert "app recsys: RUNNING" in out and "Ranker: UPSCALING" in out and "RetrievalShard1: HEALTHY" in out
    assert f"http://recsys-serving.{ns}.svc.cluster.local:8000" in out  # the chart's serveService name and port
    assert f"http://recsys-head-svc.{ns}.svc.cluster.local:8265" in out
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines() if line.strip().startswith("recsys-train-")}
    assert rows[jobs["succeeded"]] == ["retrieval", "SUCCEEDED", "Complete"]
    assert rows[jobs["failed"]] == ["ranking", "FAILED", "Failed"]
    assert f"{jobs['failed']}: Job entrypoint command failed" in out and "no such option: --epoch" in out


def test_status_json_output(kube, cluster_state):
    ns, jobs = cluster_state
    result = _invoke("status", "--kubeconfig", str(kube.kubeconfig), "-n", ns, "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by_name = {s["name"]: s for s in data["rayservices"]}
    assert set(by_name) == {"recsys", "canary"}  # no --release: every RayService in the namespace
    canary = by_name["canary"]
    assert canary["ready"] is False and canary["upgrade_in_progress"] is True
    assert canary["pending_cluster"] == "recsys-canary-p4w8z"
    mine = [j for j in data["rayjobs"] if j["name"] in jobs.values()]
    assert [j["job_status"] for j in mine] == ["RUNNING", "SUCCEEDED", "FAILED"]  # newest first


def test_require_ready_exit_code(kube, custom, cluster_state):
    ns, _ = cluster_state
    args = ("status", "--kubeconfig", str(kube.kubeconfig), "-n", ns, "--no-jobs", "--require-ready")
    _set_status(custom, ns, "rayservices", "recsys", UPGRADING)
    assert _invoke(*args, "--release", "recsys").exit_code == 1
    _set_status(custom, ns, "rayservices", "recsys", READY)
    assert _invoke(*args, "--release", "recsys").exit_code == 0
    assert _invoke(*args).exit_code == 1  # the canary release is not ready


def test_status_rejects_a_status_kuberay_would_never_write(custom, cluster_state):
    """The server enforces KubeRay's CRD schema on status too (what the recorded responses never could)."""
    ns, _ = cluster_state
    with pytest.raises(client.ApiException) as err:
        _set_status(custom, ns, "rayservices", "recsys", {**READY, "numServeEndpoints": "three"})
    assert err.value.status == 422 and "numServeEndpoints" in err.value.body


def test_missing_kuberay_crd_is_a_clear_error(kube):
    result = kube.extras["status_without_kuberay"]  # `recsys k8s status` on this server before the CRDs existed
    assert result.returncode == 1
    assert "rayservices.ray.io/v1 not found in the cluster: is the KubeRay operator installed?" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_forbidden_is_reported_with_the_api_message(default_release, in_cluster_as):
    """The chart's training-submitter ServiceAccount may create RayJobs but not list RayServices (real RBAC)."""
    ns, _ = default_release
    user = in_cluster_as(ns, "recsys-training-submitter")
    result = _invoke("status", "--in-cluster", "-n", ns)
    assert result.exit_code != 0
    expected = f'HTTP 403: rayservices.ray.io is forbidden: User "{user}" cannot list resource "rayservices"'
    assert expected in result.output
    assert "Traceback" not in result.output


def test_missing_kubeconfig_is_a_clear_error(tmp_path):
    result = _invoke("status", "--kubeconfig", str(tmp_path / "nope"), "-n", "recsys")
    assert result.exit_code != 0
    assert "cannot load Kubernetes credentials" in result.output


def test_in_cluster_without_service_account_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = _invoke("status", "--in-cluster")
    assert result.exit_code != 0
    assert "in-cluster service account" in result.output


def test_summaries_of_minimal_objects():
    """KubeRay < 1.3 reported only serviceStatus; a RayJob the operator has not touched has no status."""
    from recsys.platform.k8s.cluster import summarize_rayjob, summarize_rayservice

    legacy = summarize_rayservice({"metadata": {"name": "x", "namespace": "n"}, "status": {"serviceStatus": "Running"}})
    assert legacy.ready and legacy.endpoints["serve"] == "http://x-serve-svc.n.svc.cluster.local:8000"
    job = summarize_rayjob({"metadata": {"name": "j"}, "status": {}})
    assert (job.job_status, job.deployment_status) == ("PENDING", "New")
