"""Most-popular items: the baseline every personalised model has to beat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.training.base import top_n
from recsys.training.baselines.npz import load_npz, save_npz


class PopularityRecommender:
    """Scores an item by the number of distinct users who interacted with it (same list for everyone)."""

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None

    def fit(self, interactions: sp.csr_matrix) -> PopularityRecommender:
        self.scores = np.asarray((interactions > 0).sum(axis=0)).ravel().astype(np.float32)
        return self

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        scores = np.broadcast_to(self.scores, (len(users), len(self.scores)))
        return top_n(scores, n, user_items if filter_already_liked else None, users)

    def similar_items(self, item_indices, n: int = 20):
        """Popularity has no notion of similarity: the most popular other items."""
        items = np.asarray(item_indices, dtype=np.int64)
        scores = np.broadcast_to(self.scores, (len(items), len(self.scores))).copy()
        scores[np.arange(len(items)), items] = -np.inf
        return top_n(scores, n)

    def save(self, directory: str | Path, item_ids: np.ndarray) -> Path:
        return save_npz(directory, item_ids=np.asarray(item_ids, np.int64), scores=self.scores)

    @classmethod
    def load(cls, directory: str | Path) -> PopularityRecommender:
        arrays = load_npz(directory)
        model = cls()
        model.scores, model.item_ids = arrays["scores"].astype(np.float32), arrays["item_ids"]
        return model
