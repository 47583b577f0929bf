"""The served path (stages called in-process) ranks like the offline two-stage path.

Offline: training's ``TwoTowerRecommender`` (exact top-200 over all items) -> the ranker -> top-n.
Serving adds sources and re-ranking on top; with those set neutral (no item-kNN/popularity
candidates, ``mmr_lambda = 1``, no genre cap, no freshness, no exploration) it must return the
same lists for the same users, so speed work on the stages (sharded ANN merge, vectorised merge,
feature cache, MMR shortcut) cannot change quality unnoticed. The offline side builds the ranker
inputs as the version's ``feature_spec.json`` says (retrieval score first, murmur3-hashed item
ids). The comparison with the evaluator's own pipeline (``RetrievalRankerRecommender`` over a
``RankingContext``: merged sources, cross features, feature-store columns) is
``test_evaluator_parity.py``.
"""

from __future__ import annotations

import asyncio

import mmh3
import numpy as np
import pytest


@pytest.fixture(scope="module")
def neutral_cfg(serving_args):
    from recsys.serving.config import ServingConfig

    # generous feature timeout: this test is about ranking parity, not about timeouts on a loaded box
    return ServingConfig(**{**serving_args, "cache": {"enabled": False}, "knn_k": 0, "popularity_k": 0,
                            "feature_timeout_s": 5.0,
                            "retrieval_k": 200, "exploration_rate": 0.0,
                            "rerank": {"mmr_lambda": 1.0, "max_per_genre": 1000, "freshness_weight": 0.0}})


def _served_lists(cfg, users: list[int], n: int) -> list[list[int]]:
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService

    shards = [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)]
    service = RecommendationService(cfg, shards, Ranker(cfg))

    async def run() -> list[list[int]]:
        await service.start()
        out = []
        for u in users:
            req = RecommendationRequest(user_id=u, n=n, history=[], filters={"available_only": False})
            res = await service.recommend(req)
            assert not res.degraded, res.degraded_reasons
            assert res.model_versions.get("ranking"), "the ranker must have scored the list"
            out.append([it.item_id for it in res.items])
        return out

    return asyncio.run(run())


def _offline_lists(store, users: list[int], n: int) -> list[list[int]]:
    """Offline two-stage path: training's ``TwoTowerRecommender`` exact top-200 -> the ranker -> top-n."""
    import torch

    from recsys.training.two_tower.artifacts import TwoTowerRecommender

    tt, rk = store.get("two_tower"), store.get("ranker")
    item_ids = np.load(tt.path("item_ids.npy"))
    user_ids = np.load(tt.path("user_ids.npy"))
    retrieval = TwoTowerRecommender(torch.jit.load(tt.path("user_tower.pt")), np.load(tt.path("item_embeddings.npy")),
                                    histories=np.full((len(user_ids), 10), -1, np.int64))
    model = torch.jit.load(rk.path("ranker.pt"))
    uidx = np.array([int(np.flatnonzero(user_ids == u)[0]) for u in users])
    cand, score = retrieval.recommend(uidx, None, n=200, filter_already_liked=False)
    out = []
    with torch.no_grad():
        for rows, s in zip(cand, score, strict=True):
            ok = rows >= 0
            rows, s = rows[ok], s[ok]
            dense = np.stack([s, np.zeros_like(s)], axis=1).astype(np.float32)  # [retrieval_score, popularity]
            hashed = np.array([mmh3.hash(str(int(i)), 0, False) % 1024 for i in item_ids[rows]], np.int64)[:, None]
            logits = model(torch.from_numpy(dense), torch.from_numpy(hashed)).numpy()
            top = np.argsort(-logits, kind="stable")[:n]
            out.append(item_ids[rows[top]].tolist())
    return out


def test_served_stages_rank_like_the_offline_pipeline(neutral_cfg, serving_store, small_dataset):
    store, _ = serving_store
    users = small_dataset.users["user_id"].to_numpy()[::20][:20].tolist()
    served = _served_lists(neutral_cfg, users, n=10)
    offline = _offline_lists(store, users, n=10)
    assert served == offline
