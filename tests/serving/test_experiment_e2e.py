"""Experiments end to end through the real Ray Serve app over HTTP.

Two variants point at two different model versions (v1 promoted, v2 not); every response names
its experiment and variant and the versions that served it; exposures and the outcomes sent to
`/v1/events` (real Feast ingestion into the real Redis) land in the log, and
`recsys experiments report` reads that log and prints a decision.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from click.testing import CliRunner

APP = "recsys_experiment_e2e"


@pytest.fixture(scope="module")
def feature_repo(small_dataset, redis_url, tmp_path_factory):
    """A Feast repo for the small dataset, applied and materialized into Redis db 15 (own project)."""
    from recsys.features import FeatureStoreConfig, apply, build_offline_features, materialize
    from recsys.features.online import delete_project_keys

    cfg = FeatureStoreConfig(repo_dir=tmp_path_factory.mktemp("e2e_features"), redis_url=redis_url,
                             project=f"e2e{uuid.uuid4().hex[:8]}")
    build_offline_features(small_dataset, cfg, progress=False)
    apply(cfg)
    materialize(cfg)
    yield cfg
    delete_project_keys(cfg)


@pytest.fixture(scope="module")
def experiment_app(serve_base_url, serving_store, serving_args, write_model_version, feature_repo,
                   wait_until_ready, tmp_path_factory):
    from ray import serve

    from recsys.serving.app import build_app

    store, _ = serving_store
    write_model_version(store, "v2", seed=2, promote=False)
    exp_file = tmp_path_factory.mktemp("e2e_exp") / "experiments.yaml"
    exp_file.write_text(
        "version: 1\n"
        "experiments:\n"
        "  - name: retrieval_v2\n"
        "    salt: e2e\n"
        "    variants:\n"
        "      - {name: control, weight: 50}\n"
        "      - {name: treatment, weight: 50, retrieval_version: v2, ranking_version: v2}\n"
    )
    log_dir = tmp_path_factory.mktemp("e2e_log")
    args = {**serving_args, "experiments_config": str(exp_file), "exposure_log_dir": str(log_dir),
            "feature_repo_dir": str(feature_repo.repo_dir), "feature_project": feature_repo.project}
    serve.run(build_app(args), name=APP, route_prefix="/e2e", blocking=False)
    url = f"{serve_base_url}/e2e"
    wait_until_ready(url)
    yield url, exp_file, log_dir
    serve.delete(APP)


def test_variants_route_to_their_model_versions_and_outcomes_are_logged(experiment_app, small_dataset):
    from recsys.experiments.exposure_log import read_log
    from recsys.platform.cli import root

    url, exp_file, log_dir = experiment_app
    users = [int(u) for u in small_dataset.users.user_id.iloc[:40]]
    item = int(small_dataset.items.item_id.iloc[0])
    seen: dict[str, set[str]] = {}
    events_ok = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for user in users:
            body = c.post("/v1/recommendations", json={"user_id": user, "n": 5}).raise_for_status().json()
            assert body["experiment"] == "retrieval_v2" and body["variant"] in {"control", "treatment"}
            assert len(body["items"]) == 5
            seen.setdefault(body["variant"], set()).add(body["model_versions"]["retrieval"])
            event = {"user_id": user, "item_id": item, "event_type": "click",
                     "timestamp": datetime.now(UTC).isoformat()}
            r = c.post("/v1/events", json=event)
            assert r.status_code == 202, r.text
            events_ok += 1
    # Each variant was served by its own model version.
    assert seen == {"control": {"v1"}, "treatment": {"v2"}}

    deadline = time.time() + 10
    frames = read_log(log_dir)
    while (len(frames.exposures) < len(users) or len(frames.outcomes) < events_ok) and time.time() < deadline:
        time.sleep(0.2)
        frames = read_log(log_dir)
    assert len(frames.exposures) == len(users)
    assert set(frames.exposures.variant) == {"control", "treatment"}
    assert len(frames.outcomes) == events_ok and set(frames.outcomes.event_type) == {"click"}

    out = log_dir / "report"
    result = CliRunner().invoke(root, ["experiments", "report", str(exp_file), "--log", str(log_dir),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "retrieval_v2" in result.output and "decision" in result.output.lower()
    assert any(p.suffix == ".png" for p in out.iterdir()) and any(p.suffix == ".html" for p in out.iterdir())
