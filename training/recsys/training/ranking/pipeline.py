"""Retrieval top-K -> ranker reorder -> top-n, as one Recommender (what serving does, offline)."""

from __future__ import annotations

import numpy as np
import torch

from recsys.training.base import Catalog
from recsys.training.ranking.data import features_for, sparse_matrix


class RetrievalRankerRecommender:
    """Two-tower candidates re-scored by the ranker with features as of ``t_ns``."""

    def __init__(self, retrieval, ranker, source, catalog: Catalog, t_ns: int, candidates: int = 200,
                 sparse_names: tuple[str, ...] = ("item_id",)):
        self.retrieval, self.ranker, self.source = retrieval, ranker, source
        self.sparse_names = tuple(sparse_names)
        self.catalog, self.t_ns, self.candidates = catalog, int(t_ns), candidates

    def fit(self, interactions):
        self.retrieval.fit(interactions)
        return self

    @torch.no_grad()
    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        cand, score = self.retrieval.recommend(users, user_items, n=max(self.candidates, n),
                                               filter_already_liked=filter_already_liked)
        valid = cand >= 0
        uu = np.repeat(users, cand.shape[1]).reshape(cand.shape)[valid]
        ii = cand[valid]
        feats = features_for(self.source, self.t_ns, uu, ii, self.catalog)
        dense = np.concatenate([feats, score[valid][:, None]], axis=1).astype(np.float32)
        sparse = sparse_matrix(self.catalog, uu, ii, self.sparse_names)
        logits = np.full(cand.shape, -np.inf, dtype=np.float32)
        logits[valid] = self.ranker(torch.from_numpy(dense), torch.from_numpy(sparse)).numpy()
        order = np.argsort(-logits, axis=1, kind="stable")[:, :n]
        return np.take_along_axis(cand, order, axis=1), np.take_along_axis(logits, order, axis=1)

    def similar_items(self, item_indices, n: int = 20):
        return self.retrieval.similar_items(item_indices, n)
