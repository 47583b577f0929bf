"""The served path returns what the offline evaluator scores for it: same users, same instant, same lists.

The evaluator (``load_recommender`` -> ``RetrievalRankerRecommender`` over a ``RankingContext``) is
what every quality figure in the README measures; this test holds serving to it, so a speed change
in a stage, or a skew between training and serving, cannot change quality unnoticed.

Both sides look at the data as of one instant ``D`` (the last UTC midnight of the small dataset):

* evaluator: history = events before ``D``; two-tower top-30 + item-kNN top-10 + content top-10 +
  popularity top-10 among items the user has *not* interacted with; cross features + feature-store columns computed
  inline at ``D``; the trained ranker; top-10.
* serving, in-process stages (no Ray): the same model store (a stub two-tower, a ranker trained by
  ``train_ranking``, kNN/popularity fitted on that history), features built by Feast from the same
  history and materialized into the real Redis as of ``D``, the request clock pinned to ``D``,
  re-ranking neutral (MMR lambda 1, no genre cap, no freshness), no exploration, the content source
  on (its index built from the same catalog), no SASRec (tests/training/test_ranking_features.py
  compares its columns).

It caught that serving filtered only the 20 most recent items as "seen" (the evaluator filters all of
them): long-history users were shown items they had already watched. ``recsys.features.seen``.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ..training.conftest import small_config
from ..training.stub_models import write_stub_two_tower

N = 10
DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def parity(small_dataset, redis_url, tmp_path_factory):
    from recsys.features.online import delete_project_keys

    p = build_parity_setup(small_dataset, redis_url, tmp_path_factory.mktemp("evaluator_parity"))
    try:
        yield p
    finally:
        delete_project_keys(p["fcfg"])


def build_parity_setup(ds, redis_url: str, tmp) -> dict:
    """Models, baselines and materialized features for both sides (see the module docstring)."""
    from recsys.features import FeatureStoreConfig, apply, build_offline_features, materialize
    from recsys.platform.data.split import split_events
    from recsys.platform.model_store import ModelStore
    from recsys.training.base import Catalog, interaction_matrix
    from recsys.training.baselines import ItemKnnRecommender, PopularityRecommender
    from recsys.training.workflows import Inputs, train_ranking

    cfg = small_config(tmp, ranking={"candidates": 30, "knn_candidates": 10, "popularity_candidates": 10,
                                     "content_candidates": 10, "sasrec_candidates": 0,
                                     "epochs": 2, "sparse_features": (), "random_negatives": 0,
                                     "list_negatives": 0, "max_users": 400})
    cat = Catalog.from_dataset(ds)
    inputs = Inputs(dataset=ds, split=split_events(ds.events), catalog=cat)
    store = ModelStore(tmp / "models")
    write_stub_two_tower(store, inputs.split, cat)
    ranker = train_ranking(cfg, inputs, store, progress=False, use_ray=False)
    store.promote("ranker", ranker.version)  # whatever the gate said: this test is about parity
    import json

    dense = json.loads((store.local_path(ranker) / "feature_spec.json").read_text())["dense"]
    assert "content_score" in dense and "content_rank" in dense, "the content source's columns must be compared too"

    d_ns = (int(ds.events["timestamp"].max().value) // DAY_NS) * DAY_NS
    history = ds.events[ds.events["timestamp"].astype("int64") < d_ns]
    seen = interaction_matrix(history, cat)
    for name, model in (("item_knn", ItemKnnRecommender(cfg.baselines.knn_neighbors,
                                                                   shrinkage=cfg.baselines.knn_shrinkage).fit(seen)),
                        ("popularity", PopularityRecommender().fit(seen))):
        with store.write_version(name, "v1", kind="baseline") as d:
            model.save(d, cat.items.ids)
        store.promote(name, "v1")
    ds.items.to_parquet(tmp / "items.parquet", index=False)

    fcfg = FeatureStoreConfig(repo_dir=tmp / "features", redis_url=redis_url,
                              project=f"parity{uuid.uuid4().hex[:8]}")
    build_offline_features(replace(ds, events=history), fcfg, progress=False)
    apply(fcfg)
    stats = materialize(fcfg, progress=False)
    assert pd.Timestamp(stats.end).value == d_ns, "the last snapshot is the evaluation instant"
    assert stats.seen_users > 0
    users = np.array(sorted(set(history["user_id"].tolist())), np.int64)[::8]
    return {"cfg": cfg, "inputs": inputs, "store": store, "ranker": ranker, "history": history, "d_ns": d_ns,
            "fcfg": fcfg, "catalog_path": tmp / "items.parquet", "users": users, "tmp": tmp}


def _evaluator_lists(p) -> tuple[list[list[int]], np.ndarray]:
    from recsys.training.workflows import load_recommender

    cat = p["inputs"].catalog
    rec = load_recommender(p["store"], p["ranker"], p["inputs"], p["cfg"], history=p["history"])
    rec.ctx.t_ns = p["d_ns"]  # features as of D (the context defaults to the newest history event + 1 ns)
    rows, _ = rec.recommend(cat.users.index_of(p["users"]), rec.ctx.seen, n=N)
    lists = [[int(i) for i in cat.items.id_of(r[r >= 0])] for r in rows]
    return lists, rec.ctx.seen


def _served_lists(p) -> list[list[int]]:
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService

    rc = p["cfg"].ranking
    cfg = ServingConfig(
        model_store_uri=p["store"].root, num_shards=2, redis_url=p["fcfg"].redis_url,
        catalog_path=str(p["catalog_path"]), exposure_log_dir=str(p["tmp"] / "exposures"),
        feature_repo_dir=p["fcfg"].repo_dir, feature_project=p["fcfg"].project, feature_timeout_s=5.0,
        cache={"enabled": False}, exploration_rate=0.0, content_k=rc.content_candidates, sequential_k=0,
        retrieval_k=rc.candidates, knn_k=rc.knn_candidates, popularity_k=rc.popularity_candidates,
        rerank={"mmr_lambda": 1.0, "max_per_genre": 1000, "freshness_weight": 0.0},
        security={"insecure": True},
    )
    service = RecommendationService(cfg, [RetrievalShard(cfg, i, 2) for i in range(2)], Ranker(cfg))
    service.features.clock = lambda: p["d_ns"] / 1e9

    async def run() -> list[list[int]]:
        await service.start()
        out = []
        try:
            for u in p["users"].tolist():
                res = await service.recommend(RecommendationRequest(user_id=u, n=N, filters={"available_only": False}))
                assert not res.degraded, res.degraded_reasons
                assert res.ranking == "ranker" and res.model_versions["ranking"] == p["ranker"].version
                out.append([it.item_id for it in res.items])
        finally:
            await service.hydration.stop()
        return out

    return asyncio.run(run())


def test_served_lists_equal_the_evaluators(parity):
    evaluator, seen = _evaluator_lists(parity)
    served = _served_lists(parity)
    users = parity["users"]
    cat = parity["inputs"].catalog
    heavy = np.diff(seen.indptr)[cat.users.index_of(users)] > 20
    assert heavy.sum() >= 10, "the check needs users with more items than the recent-items list holds"
    assert all(len(x) == N for x in evaluator)
    diff = [(int(u), s, e) for u, s, e in zip(users, served, evaluator, strict=True) if s != e]
    assert not diff, f"{len(diff)} of {len(users)} users differ, e.g. {diff[:2]}"
    # and no served item is one the user has already interacted with (any time before D)
    for u, items in zip(users, served, strict=True):
        row = seen[int(cat.users.index_of([u])[0])]
        assert not set(cat.items.index_of(items).tolist()) & set(row.indices.tolist())
