"""Feature-store fixtures: a built, applied and materialized repo on the real Redis (db 15).

Each session uses its own Feast project name, so its online keys never collide with other
components' tests on db 15; the keys are deleted at teardown (no FLUSHDB).
"""

from __future__ import annotations

import uuid

import pytest


def delete_project_keys(redis_url: str, project: str) -> None:
    from recsys.features import FeatureStoreConfig
    from recsys.features.online import delete_project_keys as delete

    delete(FeatureStoreConfig(redis_url=redis_url, project=project))


@pytest.fixture(scope="session")
def feature_cfg(small_dataset, redis_url, tmp_path_factory):
    """FeatureStoreConfig for the small dataset: offline tables built, Feast applied, materialized."""
    cfg = materialized_repo(small_dataset, redis_url, tmp_path_factory.mktemp("feature_repo"), "recsys_t")
    yield cfg
    delete_project_keys(redis_url, cfg.project)


def materialized_repo(dataset, redis_url: str, repo, prefix: str):
    """A Feast repo for ``dataset`` under ``repo`` in a fresh project: offline tables built, applied,
    materialized into Redis. Callers delete the project's keys when done."""
    from recsys.features import FeatureStoreConfig, apply, build_offline_features, materialize

    cfg = FeatureStoreConfig(repo_dir=repo, redis_url=redis_url, project=f"{prefix}{uuid.uuid4().hex[:8]}",
                             event_log_path=repo / "log" / "events.jsonl")
    build_offline_features(dataset, cfg, progress=False)
    apply(cfg)
    materialize(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def ingest_cfg(feature_cfg, redis_url, tmp_path_factory):
    """Like feature_cfg but in its own repo copy and Feast project, so pushed events never change
    the values that the offline == online tests compare."""
    import shutil

    from recsys.features import FeatureStoreConfig, apply, materialize

    project = f"recsys_t{uuid.uuid4().hex[:8]}"
    repo = tmp_path_factory.mktemp("ingest_repo")
    shutil.copytree(feature_cfg.offline_dir, repo / "offline")
    cfg = FeatureStoreConfig(**{**feature_cfg.model_dump(), "repo_dir": repo, "project": project,
                                "event_log_path": repo / "log" / "events.jsonl"})
    apply(cfg)
    materialize(cfg, progress=False)
    yield cfg
    delete_project_keys(redis_url, project)


@pytest.fixture
def fresh_project(redis_url):
    """A unique Feast project name whose Redis keys are removed after the test."""
    project = f"recsys_t{uuid.uuid4().hex[:8]}"
    yield project
    delete_project_keys(redis_url, project)
