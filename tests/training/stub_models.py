"""A real (if simple) two-tower store version without a Ray job, for the ranker and gate tests.

Item embeddings = L2-normalised ALS item factors fitted on the train part; the TorchScript user
tower averages the history's embeddings.  It honours the ``two_tower`` contract (same files,
``forward(user_index, history)``), so every loader and the ranking context use it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recsys.training.base import interaction_matrix
from recsys.training.baselines import AlsRecommender
from recsys.training.two_tower.artifacts import write_two_tower


class MeanHistoryTower(nn.Module):
    """User vector = normalised mean of the history items' embeddings."""

    def __init__(self, item_embeddings: np.ndarray):
        super().__init__()
        self.register_buffer("table", torch.from_numpy(item_embeddings))

    def forward(self, user_index: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        mask = (history >= 0).unsqueeze(-1).to(self.table.dtype)
        v = (self.table[history.clamp(min=0)] * mask).sum(dim=1) + 1e-6
        return v / torch.linalg.vector_norm(v, 2, dim=[1], keepdim=True)


def write_stub_two_tower(store, split, catalog, version: str = "v1", factors: int = 16,
                         scramble_seed: int | None = None):
    """Fit ALS on ``split.train``, write it as a promoted two_tower version, return the ModelVersion.

    ``scramble_seed`` shuffles the embeddings over the items: a two-tower that learned nothing (same
    shapes and score distribution, retrieval order unrelated to the users' taste), for the tests where
    a ranker must clearly beat retrieval order.
    """
    als = AlsRecommender(factors=factors, iterations=4, seed=0).fit(interaction_matrix(split.train, catalog))
    emb = np.asarray(als.item_factors, np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
    if scramble_seed is not None:
        emb = np.ascontiguousarray(emb[np.random.default_rng(scramble_seed).permutation(len(emb))])
    config = {"embedding_dim": emb.shape[1], "history_length": 10, "n_items": catalog.n_items,
              "n_users": catalog.n_users}
    with store.write_version("two_tower", version, kind="retrieval") as d:
        write_two_tower(d, MeanHistoryTower(emb), emb, catalog, config, hnsw_threshold=10**9)
    store.promote("two_tower", version)
    return store.get("two_tower", version)
