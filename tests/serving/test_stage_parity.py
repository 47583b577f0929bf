"""The served path (stages called in-process) ranks like the offline evaluator's pipeline.

The offline evaluator scores ``RetrievalRankerRecommender`` (exact two-tower top-K -> ranker ->
top-n). Serving adds sources and re-ranking on top; with those set neutral (no item-kNN/popularity
candidates, ``mmr_lambda = 1``, no genre cap, no freshness, no exploration) it must return the
same lists for the same users, so the evaluator's numbers describe what is served and speed work
on the stages cannot change quality unnoticed. The ranker adapter only maps the offline column
layout (retrieval score last, raw item ids) onto the version's ``feature_spec.json`` layout
(retrieval score first, murmur3-hashed item ids), as serving does.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

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
    from recsys.serving.ranker import Ranker
    from recsys.serving.retrieval_shard import RetrievalShard
    from recsys.serving.schemas import RecommendationRequest
    from recsys.serving.service import RecommendationService

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
    import torch

    from recsys.training.ranking.pipeline import RetrievalRankerRecommender
    from recsys.training.two_tower.artifacts import TwoTowerRecommender

    tt, rk = store.get("two_tower"), store.get("ranker")
    item_ids = np.load(tt.path("item_ids.npy"))
    user_ids = np.load(tt.path("user_ids.npy"))
    retrieval = TwoTowerRecommender(torch.jit.load(tt.path("user_tower.pt")), np.load(tt.path("item_embeddings.npy")),
                                    histories=np.full((len(user_ids), 10), -1, np.int64))
    model = torch.jit.load(rk.path("ranker.pt"))

    class NoFeatures:  # the test ranker reads only the retrieval score among dense columns
        def features_at(self, t_ns, user_index, item_index):
            return np.zeros((len(item_index), 1), np.float32)

    def ranker(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        spec_dense = torch.stack([dense[:, -1], dense[:, 0]], dim=1)  # [retrieval_score, item_popularity_7d]
        hashed = [mmh3.hash(str(int(i)), 0, False) % 1024 for i in sparse[:, 0].tolist()]
        return model(spec_dense, torch.tensor(hashed, dtype=torch.long)[:, None])

    catalog = SimpleNamespace(items=SimpleNamespace(id_of=lambda idx: item_ids[np.asarray(idx)]))
    pipe = RetrievalRankerRecommender(retrieval, ranker, NoFeatures(), catalog, t_ns=0, candidates=200)
    uidx = np.array([int(np.flatnonzero(user_ids == u)[0]) for u in users])
    idx, _ = pipe.recommend(uidx, None, n=n, filter_already_liked=False)
    return [item_ids[row[row >= 0]].tolist() for row in idx]


def test_served_stages_rank_like_the_offline_pipeline(neutral_cfg, serving_store, small_dataset):
    store, _ = serving_store
    users = small_dataset.users["user_id"].to_numpy()[::20][:20].tolist()
    served = _served_lists(neutral_cfg, users, n=10)
    offline = _offline_lists(store, users, n=10)
    assert served == offline
