"""`recsys k8s status` against recorded API responses (real kubernetes client, fake HTTP pool)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from recsys.platform.k8s.cli import cli
from recsys.platform.k8s.cluster import summarize_rayjob, summarize_rayservice

RS_PATH = "/apis/ray.io/v1/namespaces/recsys/rayservices"
JOBS_PATH = "/apis/ray.io/v1/namespaces/recsys/rayjobs"


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_status_text_shows_readiness_apps_endpoints_and_jobs(recorded_api, kubeconfig):
    recorded_api.add("GET", RS_PATH, "rayservices_ready.json")
    recorded_api.add("GET", JOBS_PATH, "rayjobs.json")
    result = _invoke("status", "--kubeconfig", str(kubeconfig), "-n", "recsys", "--release", "recsys")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "RayService recsys/recsys: Ready (NonZeroServeEndpoints)" in out
    assert "active cluster: recsys-7xq2n" in out and "serve endpoints: 3" in out
    assert "app recsys: RUNNING" in out and "Ranker: UPSCALING" in out
    assert "http://recsys-serving.recsys.svc.cluster.local:8000" in out
    assert "http://recsys-head-svc.recsys.svc.cluster.local:8265" in out
    lines = [line.split() for line in out.splitlines() if "recsys-train-" in line and "SUCCEEDED" in line]
    assert lines and lines[0][:4] == ["recsys-train-retrieval-k7d2x", "retrieval", "SUCCEEDED", "Complete"]
    assert "no such option: --epoch" in out  # failed job's message is surfaced
    # real requests went out: auth header from kubeconfig, label selector for the release
    rs_req = recorded_api.requests[0]
    headers = {k.lower(): v for k, v in rs_req["headers"].items()}
    assert headers["authorization"] == "Bearer recorded-token"
    assert rs_req["query"]["labelSelector"] == ["app.kubernetes.io/instance=recsys"]


def test_status_json_output(recorded_api, kubeconfig):
    recorded_api.add("GET", RS_PATH, "rayservices_upgrading.json")
    recorded_api.add("GET", JOBS_PATH, "rayjobs.json")
    result = _invoke("status", "--kubeconfig", str(kubeconfig), "-n", "recsys", "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    canary = data["rayservices"][1]
    assert canary["ready"] is False and canary["upgrade_in_progress"] is True
    assert canary["pending_cluster"] == "recsys-canary-p4w8z"
    assert [j["job_status"] for j in data["rayjobs"]] == ["RUNNING", "SUCCEEDED", "FAILED"]  # newest first
    assert "labelSelector" not in recorded_api.requests[0]["query"]


def test_require_ready_exit_code(recorded_api, kubeconfig):
    recorded_api.add("GET", RS_PATH, "rayservices_upgrading.json")
    result = _invoke("status", "--kubeconfig", str(kubeconfig), "-n", "recsys", "--no-jobs", "--require-ready")
    assert result.exit_code == 1
    recorded_api.add("GET", RS_PATH, "rayservices_ready.json")
    result = _invoke("status", "--kubeconfig", str(kubeconfig), "-n", "recsys", "--no-jobs", "--require-ready")
    assert result.exit_code == 0


def test_missing_kuberay_crd_is_a_clear_error(recorded_api, kubeconfig):
    result = _invoke("status", "--kubeconfig", str(kubeconfig), "-n", "recsys")  # no routes: API answers 404
    assert result.exit_code != 0
    assert "rayservices.ray.io/v1 not found in the cluster: is the KubeRay operator installed?" in result.output
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


def test_summaries_from_fixtures(fixture_json):
    rs = summarize_rayservice(fixture_json("rayservices_ready.json")["items"][0])
    assert rs.ready and rs.applications[0].deployments == {
        "Ingress": "HEALTHY", "Ranker": "UPSCALING", "RetrievalShard": "HEALTHY",
    }
    old_style = {"metadata": {"name": "x", "namespace": "n"}, "status": {"serviceStatus": "Running"}}
    legacy = summarize_rayservice(old_style)
    assert legacy.ready and legacy.endpoints["serve"] == "http://x-serve-svc.n.svc.cluster.local:8000"
    job = summarize_rayjob({"metadata": {"name": "j"}, "status": {}})
    assert (job.job_status, job.deployment_status) == ("PENDING", "New")
