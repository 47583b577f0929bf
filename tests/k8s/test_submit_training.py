"""`recsys k8s submit-training`: RayJobs created from the chart's templates (recorded API) or a file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from recsys.platform.k8s.cli import cli
from recsys.platform.k8s.validation import crd_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
CM_PATH = "/api/v1/namespaces/recsys/configmaps/recsys-training-jobs"
JOBS_PATH = "/apis/ray.io/v1/namespaces/recsys/rayjobs"


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_submit_from_configmap_creates_rayjobs(recorded_api, kubeconfig):
    recorded_api.add("GET", CM_PATH, "configmap_training_jobs.json")
    recorded_api.add("POST", JOBS_PATH, "rayjob_created.json", status=201)
    result = _invoke("submit-training", "--kubeconfig", str(kubeconfig), "-n", "recsys",
                     "--configmap", "recsys-training-jobs", "--job", "retrieval")
    assert result.exit_code == 0, result.output
    assert "created RayJob recsys/recsys-train-retrieval-w5r8p (retrieval): recsys train retrieval" in result.output
    posts = [r for r in recorded_api.requests if r["method"] == "POST"]
    assert len(posts) == 1
    body = posts[0]["body"]
    assert body["kind"] == "RayJob" and body["metadata"]["generateName"] == "recsys-train-retrieval-"
    assert "name" not in body["metadata"]
    assert body["metadata"]["labels"]["recsys.io/training-job"] == "retrieval"
    # what was sent is a valid RayJob for KubeRay v1.7.0
    validator = crd_validator(REPO_ROOT / "helm" / "crds-schemas", "ray.io/v1", "RayJob")
    assert validator.is_valid(body)


def test_submit_all_jobs_by_default(recorded_api, kubeconfig):
    recorded_api.add("GET", CM_PATH, "configmap_training_jobs.json")
    recorded_api.add("POST", JOBS_PATH, "rayjob_created.json", status=201)
    result = _invoke("submit-training", "--kubeconfig", str(kubeconfig), "-n", "recsys",
                     "--configmap", "recsys-training-jobs")
    assert result.exit_code == 0, result.output
    sent = [r["body"]["metadata"]["labels"]["recsys.io/training-job"]
            for r in recorded_api.requests if r["method"] == "POST"]
    assert sent == ["ranking", "retrieval"]


def test_unknown_job_is_rejected_before_any_create(recorded_api, kubeconfig):
    recorded_api.add("GET", CM_PATH, "configmap_training_jobs.json")
    result = _invoke("submit-training", "--kubeconfig", str(kubeconfig), "-n", "recsys",
                     "--configmap", "recsys-training-jobs", "--job", "evaluation")
    assert result.exit_code != 0
    assert "unknown training job(s) evaluation; available: ranking, retrieval" in result.output
    assert not [r for r in recorded_api.requests if r["method"] == "POST"]


def test_forbidden_is_reported_with_the_api_message(recorded_api, kubeconfig):
    recorded_api.add("GET", CM_PATH, "configmap_training_jobs.json")
    recorded_api.add("POST", JOBS_PATH, "status_forbidden.json", status=403)
    result = _invoke("submit-training", "--kubeconfig", str(kubeconfig), "-n", "recsys",
                     "--configmap", "recsys-training-jobs", "--job", "ranking")
    assert result.exit_code != 0
    assert "HTTP 403: rayjobs.ray.io is forbidden" in result.output
    assert "Traceback" not in result.output


def test_dry_run_from_manifest_file(tmp_path, fixture_json):
    cm = fixture_json("configmap_training_jobs.json")
    manifest = tmp_path / "rendered.yaml"
    named = yaml.safe_load(cm["data"]["ranking.yaml"])
    named["metadata"].pop("generateName")
    named["metadata"]["name"] = "recsys-train-ranking"  # as rendered with training.runOnInstall=true
    manifest.write_text(yaml.safe_dump_all([{"kind": "Service", "apiVersion": "v1", "metadata": {"name": "x"}},
                                            named]))
    result = _invoke("submit-training", "--manifest", str(manifest), "--dry-run")
    assert result.exit_code == 0, result.output
    (doc,) = list(yaml.safe_load_all(result.output))
    assert doc["metadata"]["generateName"] == "recsys-train-ranking-" and "name" not in doc["metadata"]


def test_usage_errors():
    assert _invoke("submit-training").exit_code == 2
    result = _invoke("submit-training", "--configmap", "x", "--dry-run")
    assert result.exit_code == 2 and "--dry-run works with --manifest only" in result.output


def test_manifest_without_rayjobs_is_rejected(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text(json.dumps({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "other"}}))
    result = _invoke("submit-training", "--manifest", str(f), "--dry-run")
    assert result.exit_code != 0 and "no RayJob and no *-training-jobs ConfigMap found" in result.output


def test_fixtures_match_crd_schemas(fixture_json):
    """The recorded responses are realistic: they validate (status included) against KubeRay v1.7.0."""
    schemas = REPO_ROOT / "helm" / "crds-schemas"
    for name, kind in [("rayservices_upgrading.json", "RayService"), ("rayjobs.json", "RayJob")]:
        validator = crd_validator(schemas, "ray.io/v1", kind)
        for item in fixture_json(name)["items"]:
            errors = [e.message for e in validator.iter_errors(item)]
            assert not errors, (name, item["metadata"]["name"], errors[:3])
    validator = crd_validator(schemas, "ray.io/v1", "RayJob")
    assert validator.is_valid(fixture_json("rayjob_created.json"))
