"""`recsys features ...`: commands work end to end and fail with a message, not a traceback."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from recsys.platform.cli import root  # import the root first: it mounts recsys.features.cli


@pytest.fixture
def cli_env(ingest_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_FEATURE_REPO_DIR", str(ingest_cfg.repo_dir))
    monkeypatch.setenv("RECSYS_REDIS_URL", ingest_cfg.redis_url)
    monkeypatch.setenv("RECSYS_LOG_DIR", str(tmp_path / "logs"))
    return ingest_cfg


def _invoke(args):
    return CliRunner().invoke(root, ["features", *args])


def test_get_prints_user_features(cli_env, small_dataset, monkeypatch):
    # The CLI derives the project from the platform config (default "recsys"); use the fixture's.
    from recsys.features import cli as features_cli

    monkeypatch.setattr(features_cli, "_cfg", lambda platform_cfg: cli_env)
    user, item = int(small_dataset.users.user_id.iloc[0]), int(small_dataset.items.item_id.iloc[0])
    res = _invoke(["get", str(user), "--items", f"{item},987654321"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["user_id"] == user and "user_views_all" in out["features"]
    assert out["missing_items"] == [987654321]


def test_get_unknown_user_is_a_clean_error(cli_env, monkeypatch):
    from recsys.features import cli as features_cli

    monkeypatch.setattr(features_cli, "_cfg", lambda platform_cfg: cli_env)
    res = _invoke(["get", "987654321"])
    assert res.exit_code == 2 and "no online features" in res.output
    assert "Traceback" not in res.output


def test_ingest_bad_file_writes_nothing(cli_env, small_dataset, monkeypatch, tmp_path):
    from recsys.features import cli as features_cli

    monkeypatch.setattr(features_cli, "_cfg", lambda platform_cfg: cli_env)
    user, item = int(small_dataset.users.user_id.iloc[0]), int(small_dataset.items.item_id.iloc[0])
    now = pd.Timestamp.now(tz="UTC").isoformat()
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"user_id": user, "item_id": item, "event_type": "view", "timestamp": now}) + "\n"
                    + json.dumps({"user_id": user, "item_id": item, "event_type": "vieww", "timestamp": now}) + "\n")
    size = cli_env.log_path.stat().st_size if cli_env.log_path.exists() else 0
    res = _invoke(["ingest", str(path)])
    assert res.exit_code == 2 and "event[1].event_type" in res.output, res.output
    assert (cli_env.log_path.stat().st_size if cli_env.log_path.exists() else 0) == size
    path.write_text("{not json\n")
    res = _invoke(["ingest", str(path)])
    assert res.exit_code == 2 and ":1: not valid JSON" in res.output


def test_materialize_before_build_is_a_clean_error(tmp_path, monkeypatch, redis_url):
    monkeypatch.setenv("RECSYS_FEATURE_REPO_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("RECSYS_REDIS_URL", redis_url)
    res = _invoke(["materialize"])
    assert res.exit_code == 2 and "recsys features build" in res.output
