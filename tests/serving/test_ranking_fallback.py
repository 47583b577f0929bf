"""Ranking mode in the response and /metrics, and the ranker's cross features computed online.

* no ranker promoted (the promotion gate refused every one) -> ``"ranking": "retrieval_only"``,
  ``recsys_ranker_active 0``, ``recsys_ranking_mode_total{mode="retrieval_only"}``;
* the item-kNN cross feature serving computes equals the item-kNN candidate source's own score;
* a ranker trained on cross features gets them filled (not zeros) from the request's arrays.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi.testclient import TestClient

from .conftest import base_args, write_models


def _service(args: dict):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**args)
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    return svc


def _mode_count(metrics: str, mode: str) -> float:
    """Value of recsys_ranking_mode_total{mode=...} in a /metrics text (0 when not yet exported)."""
    prefix = f'recsys_ranking_mode_total{{mode="{mode}"}} '
    return next((float(line[len(prefix):]) for line in metrics.splitlines() if line.startswith(prefix)), 0.0)


def test_no_promoted_ranker_answers_retrieval_only_and_says_so(small_dataset, redis_url, tmp_path):
    from recsys.platform.model_store import ModelStore
    from recsys.serving.http.api import create_api

    store = ModelStore(tmp_path / "models")
    write_models(store, small_dataset, "v1", seed=1, promote=False)
    for name in ("two_tower", "popularity", "item_knn"):  # the ranker version exists but was never promoted
        store.promote(name, "v1")
    small_dataset.items.to_parquet(tmp_path / "items.parquet", index=False)
    svc = _service(base_args(store, tmp_path / "items.parquet", redis_url, tmp_path / "exposures"))
    with TestClient(create_api(svc)) as c:
        before = _mode_count(c.get("/metrics").text, "retrieval_only")  # the registry is shared in-process
        body = c.post("/v1/recommendations", json={"user_id": 3, "n": 5}).json()
        assert body["ranking"] == "retrieval_only" and len(body["items"]) == 5
        assert body["degraded"] is False  # no promoted ranker is a deliberate state, not a failed dependency
        scores = [it["score"] for it in body["items"]]
        assert scores == sorted(scores, reverse=True)  # retrieval order (MMR/freshness off by default?)
        metrics = c.get("/metrics").text
    assert "recsys_ranker_active 0.0" in metrics
    # >=: in Prometheus multiprocess mode /metrics sums every process of the test session, so another
    # app of the session may add its own retrieval_only answers; this request must be among them
    assert _mode_count(metrics, "retrieval_only") >= before + 1


def test_promoted_ranker_is_reported(serving_args):
    from recsys.serving.http.api import create_api

    svc = _service(serving_args)
    with TestClient(create_api(svc)) as c:
        body = c.post("/v1/recommendations", json={"user_id": 3, "n": 5}).json()
        metrics = c.get("/metrics").text
    assert "recsys_ranker_active 1.0" in metrics
    assert body["ranking"] in ("ranker", "retrieval_only")  # retrieval_only only when features are unavailable
    assert (body["ranking"] == "retrieval_only") == bool(body["degraded_reasons"])


def test_online_cross_features_match_the_candidate_sources(serving_store):
    from recsys.platform.ranking_features import CROSS_FEATURES
    from recsys.serving.models.artifacts import RankerSpec, load_item_knn, load_popularity, resolve_version
    from recsys.serving.models.bundle import Sources
    from recsys.serving.pipeline.candidates.sources import ItemKnnCandidates, PopularityCandidates
    from recsys.serving.pipeline.scoring.inputs import build_ranker_inputs, cross_inputs

    store, _ = serving_store
    knn = ItemKnnCandidates(load_item_knn(store, resolve_version(store, "item_knn", None)))
    pop = PopularityCandidates(load_popularity(store, resolve_version(store, "popularity", None)))
    history = [int(x) for x in knn.art.item_ids[[5, 9, 14]]]
    ids, knn_scores = knn.from_history(history, 20)
    rng = np.random.default_rng(0)
    cand_vec = rng.normal(size=(len(ids), 8)).astype(np.float32)
    recent_vec = rng.normal(size=(3, 8)).astype(np.float32)
    cross = cross_inputs(history, ids, cand_vec, recent_vec, Sources(popularity=pop, item_knn=knn))
    np.testing.assert_allclose(cross.source_scores["item_knn"], knn_scores, rtol=1e-5)
    np.testing.assert_allclose(cross.source_scores["popularity"], pop.normalized_scores(ids))
    spec = RankerSpec(dense=list(CROSS_FEATURES), sparse=[], normalization={}, retrieval_score=False)
    retrieval = np.linspace(1.0, 0.0, len(ids)).astype(np.float32)
    dense, _ = build_ranker_inputs(spec, user_id=3, item_ids=ids, retrieval_scores=retrieval, cross=cross)
    col = {n: j for j, n in enumerate(CROSS_FEATURES)}
    np.testing.assert_allclose(dense[:, col["item_knn_score"]], knn_scores, rtol=1e-5)
    np.testing.assert_array_equal(dense[:, col["two_tower_rank"]], np.arange(len(ids)))
    np.testing.assert_allclose(dense[:, col["recent_sim_max"]], (cand_vec @ recent_vec.T).max(axis=1), rtol=1e-5)
