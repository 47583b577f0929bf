"""EASE: embarrassingly shallow autoencoder (Steck, WWW 2019), the closed-form item-item model.

B = argmin |X - X B|^2 + lambda |B|^2 subject to diag(B) = 0, with X the binarised users x items
matrix.  Solution: P = (X^T X + lambda I)^-1, B_ij = -P_ij / P_jj (B_jj = 0).  Scores = X_u B.

The inverse is dense n_items x n_items, so the cost is O(n^3) time and O(n^2) memory; only items
with at least one interaction take part (the others can never be scored above zero anyway), and
``max_items`` (default 12,000: ml-latest-small's ~9k rated movies invert in well under a minute
and 0.3 GB in float32 on 2 cores; 20k would be ~8x the time and 1.6 GB) refuses larger catalogs
with a clear error instead of running out of memory.  After fitting, each item keeps only its
``keep`` largest-magnitude weights (a sparse matrix like item-kNN's), which is what is saved and
scored, so a loaded model answers exactly like the fitted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recsys.training.base import top_n
from recsys.training.baselines.item_knn import neighbor_matrix
from recsys.training.baselines.npz import load_npz, save_npz


class EaseTooLargeError(ValueError):
    """The catalog is above ``max_items``: the dense inverse would not fit the time/memory budget."""


DENSE_COPIES = 3
"""n x n float32 matrices alive at the peak of :meth:`EaseRecommender.fit`: the Gram matrix, its
Cholesky factor, the inverse, B and |B| overlap partly (measured: 4,000 items grew peak RSS by 159 MiB = 2.6 x
the 61 MiB of one matrix: ``fit`` on a random 6,000 x 4,000 matrix, ru_maxrss before/after)."""


def ease_memory_bytes(n_items: int) -> int:
    """Peak memory of the dense closed form for ``n_items`` active items (float32)."""
    return DENSE_COPIES * 4 * int(n_items) ** 2


def _human(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:,.1f} TiB"


class EaseRecommender:
    def __init__(self, regularization: float = 500.0, max_items: int = 12_000, keep: int = 512) -> None:
        self.regularization, self.max_items, self.keep = regularization, max_items, keep
        self.neighbors: np.ndarray | None = None  # [n_items, keep] item indices (-1 = padding)
        self.weights: np.ndarray | None = None  # [n_items, keep] B[item, neighbor]
        self.item_ids: np.ndarray | None = None
        self._b: sp.csr_matrix | None = None

    def fit(self, interactions: sp.csr_matrix) -> EaseRecommender:
        x = (sp.csr_matrix(interactions) > 0).astype(np.float32)
        n_items = x.shape[1]
        active = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
        if len(active) > self.max_items:
            raise EaseTooLargeError(
                f"EASE refuses {len(active):,} items (ease_max_items={self.max_items:,}): its dense "
                f"{len(active):,}x{len(active):,} closed form would need about "
                f"{_human(ease_memory_bytes(len(active)))} of memory ({DENSE_COPIES} float32 copies) and O(n^3) time; "
                "use item_knn/als/bpr (sparse) at this size, or raise --ease-max-items on a machine that has it")
        xa = x[:, active]
        g = torch.from_numpy((xa.T @ xa).toarray().astype(np.float32))
        g.diagonal().add_(self.regularization)
        p = torch.cholesky_inverse(torch.linalg.cholesky(g))
        b = -p / p.diagonal()[None, :]
        b.fill_diagonal_(0.0)
        k = min(self.keep, max(len(active) - 1, 1))
        val, idx = torch.topk(b.abs(), k, dim=1)
        w = torch.gather(b, 1, idx).numpy()
        self.neighbors = np.full((n_items, k), -1, dtype=np.int64)
        self.weights = np.zeros((n_items, k), dtype=np.float32)
        self.neighbors[active] = active[idx.numpy()]
        self.weights[active] = np.where(val.numpy() > 0, w, 0.0)
        self._build_matrix()
        return self

    def _build_matrix(self) -> None:
        self._b = neighbor_matrix(self.neighbors, self.weights)

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        x = (user_items[users] > 0).astype(np.float32)
        scores = (x @ self._b).toarray()
        # items the model never saw score 0; rank them below every scored item, never above
        scores[:, np.asarray(self._b.getnnz(axis=0)) == 0] = -1e9
        return top_n(scores, n, user_items if filter_already_liked else None, users)

    def similar_items(self, item_indices, n: int = 20):
        items = np.asarray(item_indices, dtype=np.int64)
        idx, val = self.neighbors[items], self.weights[items]
        order = np.argsort(-val, axis=1, kind="stable")[:, :n]
        idx, val = np.take_along_axis(idx, order, 1), np.take_along_axis(val, order, 1)
        idx = np.where(val > 0, idx, -1)
        if idx.shape[1] < n:
            idx = np.pad(idx, ((0, 0), (0, n - idx.shape[1])), constant_values=-1)
            val = np.pad(val, ((0, 0), (0, n - val.shape[1])))
        return idx, val

    def save(self, directory: str | Path, item_ids: np.ndarray) -> Path:
        return save_npz(directory, item_ids=np.asarray(item_ids, np.int64), neighbors=self.neighbors,
                        weights=self.weights, regularization=np.float32(self.regularization))

    @classmethod
    def load(cls, directory: str | Path) -> EaseRecommender:
        arrays = load_npz(directory)
        model = cls(regularization=float(arrays["regularization"]), keep=arrays["neighbors"].shape[1])
        model.neighbors, model.weights = arrays["neighbors"], arrays["weights"].astype(np.float32)
        model.item_ids = arrays["item_ids"]
        model._build_matrix()
        return model
