"""The SASRec source in the serving graph: loaded from the store, fed the served history, answers."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from tests.serving.conftest import base_args, build_store


def _write_sasrec(store, dataset, version: str = "v1") -> None:
    """A real (untrained, seeded) SASRec encoder exported by the training code's own writer."""
    from recsys.training.base import Catalog
    from recsys.training.sequential.artifacts import write_sasrec
    from recsys.training.sequential.config import SequentialConfig
    from recsys.training.sequential.model import SasRecModel

    torch.manual_seed(0)
    cat = Catalog.from_dataset(dataset)
    sc = SequentialConfig(max_length=8, embedding_dim=16, dropout=0.0)
    model = SasRecModel(cat.n_items, sc.max_length, sc.embedding_dim, sc.heads, sc.blocks, sc.dropout)
    with store.write_version("sasrec", version, kind="retrieval", params={"split": "global_time"}) as d:
        write_sasrec(d, model, cat, sc)
    store.promote("sasrec", version)


def _service(store, catalog, redis_url, tmp_path, **extra):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.pipeline.service import RecommendationService

    # only the SASRec source next to a small ANN list, so its candidates must reach the answer
    cfg = ServingConfig(**{**base_args(store, catalog, redis_url, tmp_path / "exp"), "knn_k": 0, "popularity_k": 0,
                           "retrieval_k": 5, "sequential_k": 50, **extra})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    return svc


def test_sasrec_source_answers_from_the_request_history(small_dataset, redis_url, tmp_path):
    from recsys.platform.ranking_features import recent_distinct
    from recsys.serving.http.api import create_api

    store, catalog = build_store(small_dataset, tmp_path)
    _write_sasrec(store, small_dataset)
    svc = _service(store, catalog, redis_url, tmp_path)
    seq = svc.bundle.sources.sequential
    assert seq is not None and svc.bundle.versions.sequential == "v1"
    items = small_dataset.items["item_id"].to_numpy()
    history = [int(items[3]), int(items[7]), int(items[3]), int(items[11])]
    ids, scores = seq.from_history(history, 10)
    # the source equals the exported encoder on the distinct, most-recent-first history
    rows = seq.art.item_index.lookup(recent_distinct(history, len(history)))
    h = np.full((1, 8), -1, np.int64)
    h[0, :3] = rows
    vec = seq.art.user_tower(torch.tensor([-1]), torch.from_numpy(h)).reshape(-1).detach().numpy()
    expect = np.argsort(-(seq.item_embeddings @ vec), kind="stable")[:10]
    np.testing.assert_array_equal(ids, seq.art.item_ids[expect])
    assert np.all(np.diff(scores) <= 1e-6)
    assert seq.from_history([], 10)[0].size == 0  # no history: the source stays silent

    with TestClient(create_api(svc)) as c:
        body = c.post("/v1/recommendations", json={"user_id": 1, "n": 20, "history": history}).json()
        assert body["model_versions"]["sequential"] == "v1"
        assert any("sasrec" in it["sources"] for it in body["items"]), body["items"]


@pytest.mark.slow
def test_sasrec_source_reads_events_pushed_in_real_time(small_dataset, redis_url, tmp_path):
    """POST /v1/events -> online store (real Feast + Redis) -> the next request's SASRec candidates."""
    from recsys.features import FeatureStoreConfig, apply, build_offline_features, materialize
    from recsys.features.online import delete_project_keys
    from recsys.serving.http.api import create_api

    fcfg = FeatureStoreConfig(repo_dir=tmp_path / "features", redis_url=redis_url,
                              project=f"seq{uuid.uuid4().hex[:8]}")
    build_offline_features(small_dataset, fcfg, progress=False)
    apply(fcfg)
    materialize(fcfg)
    try:
        store, catalog = build_store(small_dataset, tmp_path)
        _write_sasrec(store, small_dataset)
        svc = _service(store, catalog, redis_url, tmp_path, feature_repo_dir=str(fcfg.repo_dir),
                       feature_project=fcfg.project)
        items = small_dataset.items["item_id"].to_numpy()
        user = int(small_dataset.users["user_id"].iloc[0])
        with TestClient(create_api(svc)) as c:
            for item in (items[5], items[9]):
                r = c.post("/v1/events", json={"user_id": user, "item_id": int(item), "event_type": "click",
                                               "timestamp": datetime.now(UTC).isoformat()})
                assert r.status_code in (200, 202), r.text
            deadline = time.time() + 2.0  # 202 = durably logged; the consumer applies it right after
            while (recent := svc.features.fetch(user, []).recent_item_ids)[:2] != [int(items[9]), int(items[5])] \
                    and time.time() < deadline:
                time.sleep(0.05)
            assert recent[:2] == [int(items[9]), int(items[5])]
            expect = set(svc.bundle.sources.sequential.from_history(recent, 50)[0].tolist())
            body = c.post("/v1/recommendations", json={"user_id": user, "n": 20}).json()
            tagged = {it["item_id"] for it in body["items"] if "sasrec" in it["sources"]}
            assert tagged and tagged <= expect, body
    finally:
        delete_project_keys(fcfg)
