"""Item-based k-nearest-neighbours on cosine similarity of the confidence matrix's item columns.

Only the top-K neighbours per item are kept (a sparse [n_items, K] list), which is what serving's
"similar items" and item-kNN candidate source read; similarity blocks are computed a few hundred
items at a time so a large catalog never materialises an n x n matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.training.base import batched, top_n
from recsys.training.baselines.npz import load_npz, save_npz


def neighbor_matrix(neighbors: np.ndarray, weights: np.ndarray) -> sp.csr_matrix:
    """(n, n) sparse item-item matrix from top-k neighbour lists (-1 = no neighbour); user scores = x @ it."""
    n, k = neighbors.shape
    ok = neighbors >= 0
    rows = np.repeat(np.arange(n), k).reshape(n, k)[ok]
    return sp.csr_matrix((weights[ok], (rows, neighbors[ok])), shape=(n, n), dtype=np.float32)


class ItemKnnRecommender:
    def __init__(self, neighbors: int = 100, block_size: int = 512, shrinkage: float = 0.0) -> None:
        self.k = neighbors
        self.shrinkage = shrinkage  # cosine x_i.x_j / (|x_i||x_j| + shrinkage): damps pairs seen by few users
        self.block_size = block_size
        self.neighbors: np.ndarray | None = None  # [n_items, K] item indices, -1 = padding
        self.weights: np.ndarray | None = None  # [n_items, K] cosine similarity, 0 for padding
        self.item_ids: np.ndarray | None = None
        self._w: sp.csr_matrix | None = None

    def fit(self, interactions: sp.csr_matrix) -> ItemKnnRecommender:
        x = sp.csc_matrix(interactions, dtype=np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        shrink = self.shrinkage > 0
        xn = x if shrink else (x @ sp.diags(1.0 / np.maximum(norms, 1e-12))).tocsc().astype(np.float32)
        xt = xn.T.tocsr()
        n = x.shape[1]
        k = min(self.k, max(n - 1, 1))
        nbr = np.full((n, k), -1, dtype=np.int64)
        wts = np.zeros((n, k), dtype=np.float32)
        for sl in batched(n, self.block_size):
            sims = (xt[sl] @ xn).toarray()
            if shrink:
                sims /= np.outer(norms[sl], norms) + self.shrinkage
            rows = np.arange(sl.start, sl.stop)
            sims[rows - sl.start, rows] = 0.0  # an item is not its own neighbour
            sims[sims <= 0] = -np.inf
            idx, val = top_n(sims, k)
            nbr[sl], wts[sl] = idx, np.where(idx >= 0, val, 0.0)
        self.neighbors, self.weights = nbr, wts
        self._build_matrix()
        return self

    def _build_matrix(self) -> None:
        self._w = neighbor_matrix(self.neighbors, self.weights)

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        scores = (user_items[users] @ self._w).toarray()
        return top_n(scores, n, user_items if filter_already_liked else None, users)

    def similar_items(self, item_indices, n: int = 20):
        items = np.asarray(item_indices, dtype=np.int64)
        idx, val = self.neighbors[items, :n], self.weights[items, :n]
        if idx.shape[1] < n:
            pad = n - idx.shape[1]
            idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
            val = np.pad(val, ((0, 0), (0, pad)))
        return idx, val

    def save(self, directory: str | Path, item_ids: np.ndarray) -> Path:
        return save_npz(directory, item_ids=np.asarray(item_ids, np.int64), neighbors=self.neighbors,
                        weights=self.weights)

    @classmethod
    def load(cls, directory: str | Path) -> ItemKnnRecommender:
        arrays = load_npz(directory)
        model = cls(neighbors=arrays["neighbors"].shape[1])
        model.neighbors, model.weights = arrays["neighbors"], arrays["weights"].astype(np.float32)
        model.item_ids = arrays["item_ids"]
        model._build_matrix()
        return model
