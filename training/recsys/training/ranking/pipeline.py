"""Merged candidates -> ranker reorder -> top-n, as one Recommender (what serving does, offline)."""

from __future__ import annotations

import numpy as np
import torch

from recsys.training.base import batched
from recsys.training.ranking.context import RankingContext
from recsys.training.ranking.data import sparse_matrix


class RetrievalRankerRecommender:
    """Candidates and features from a :class:`RankingContext`, scored by the ranker.

    ``dense_names`` is the ranker's column order (``feature_spec.json`` "dense"); the context
    computes every column it knows and the ranker gets the ones it was trained on.
    """

    def __init__(self, ctx: RankingContext, ranker, dense_names: list[str],
                 sparse_names: tuple[str, ...] = (), batch_size: int = 512):
        self.ctx, self.ranker = ctx, ranker
        missing = [n for n in dense_names if n not in ctx.feature_names]
        if missing:
            raise ValueError(f"ranker expects columns the context does not compute: {missing}")
        self.columns = [ctx.feature_names.index(n) for n in dense_names]
        self.sparse_names = tuple(sparse_names)
        self.batch_size = batch_size

    def fit(self, interactions):
        return self

    @torch.no_grad()
    def score_lists(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([U, C] candidate rows, [U, C] ranker logits, -inf on padding)."""
        cands = self.ctx.candidates(users)
        valid = cands.valid
        feats = self.ctx.features(cands)[..., self.columns]
        logits = np.full(cands.items.shape, -np.inf, dtype=np.float32)
        if valid.any():
            uu = np.repeat(users, cands.items.shape[1]).reshape(cands.items.shape)[valid]
            sparse = sparse_matrix(self.ctx.catalog, uu, cands.items[valid], self.sparse_names)
            logits[valid] = self.ranker(torch.from_numpy(np.ascontiguousarray(feats[valid])),
                                        torch.from_numpy(sparse)).numpy()
        return cands.items, logits

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        out_i = np.full((len(users), n), -1, dtype=np.int64)
        out_s = np.full((len(users), n), -np.inf, dtype=np.float32)
        for sl in batched(len(users), self.batch_size):
            items, logits = self.score_lists(users[sl])
            if filter_already_liked and user_items is not None:  # the context removed its own history
                seen = user_items[users[sl]].tocsr()
                for j in range(len(items)):
                    s = seen.indices[seen.indptr[j]:seen.indptr[j + 1]]
                    logits[j, np.isin(items[j], s)] = -np.inf
            order = np.argsort(-logits, axis=1, kind="stable")[:, :n]
            top_i = np.take_along_axis(items, order, axis=1)
            top_s = np.take_along_axis(logits, order, axis=1)
            top_i = np.where(np.isneginf(top_s), -1, top_i)
            out_i[sl, :top_i.shape[1]], out_s[sl, :top_s.shape[1]] = top_i, top_s
        return out_i, out_s

    def similar_items(self, item_indices, n: int = 20):
        return self.ctx.retrieval.similar_items(item_indices, n)


class CandidateRecallRecommender:
    """The merged candidate list in two-tower order: its Recall@K for large K is the ranker's ceiling."""

    def __init__(self, ctx: RankingContext):
        self.ctx = ctx

    def fit(self, interactions):
        return self

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        cands = self.ctx.candidates(users)
        score = np.where(cands.valid, cands.scores["two_tower"], -np.inf)
        order = np.argsort(-score, axis=1, kind="stable")[:, :n]
        items = np.take_along_axis(cands.items, order, axis=1)
        out = np.full((len(users), n), -1, dtype=np.int64)
        out[:, :items.shape[1]] = items
        return out, np.zeros(out.shape, np.float32)
