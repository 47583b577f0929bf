"""Implicit-feedback matrix factorisation (Hu, Koren & Volinsky, ICDM 2008), numpy/scipy only.

Objective: min sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + lambda (|X|^2 + |Y|^2), with p_ui = 1 for observed
pairs and confidence c_ui = 1 + alpha * r_ui (r = summed event weights).  Each half-iteration solves
all users (then all items) *at once* with a few steps of batched conjugate gradient, as ``implicit``
does (Takacs et al. 2011), warm-started from the previous factors:

    A_u = Y^T Y + lambda I + Y_u^T diag(alpha r_u) Y_u,    b_u = Y_u^T (1 + alpha r_u)

``A_u p`` is never formed: ``Y^T Y p`` is one GEMM for every user and the sparse correction is a
sampled dot product over the non-zeros (gather + row-wise dot) followed by a sparse x dense product.
Everything is float32 and the dense products go through the multithreaded BLAS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.training.base import top_n
from recsys.training.baselines.npz import load_npz, save_npz

_CHUNK_NNZ = 1 << 19  # rows of the gathered [nnz, factors] blocks processed at a time


def _sampled_rowdot(p: np.ndarray, y: np.ndarray, m: sp.csr_matrix) -> np.ndarray:
    """For every stored (u, i) of ``m``: p[u] . y[i], in chunks of rows to bound memory."""
    out = np.empty(m.nnz, dtype=np.float32)
    indptr, cols = m.indptr, m.indices
    counts = np.diff(indptr)
    start_row = 0
    n_rows = m.shape[0]
    while start_row < n_rows:
        # extend the row range until the chunk holds about _CHUNK_NNZ non-zeros
        end_row = int(np.searchsorted(indptr, indptr[start_row] + _CHUNK_NNZ, side="right")) - 1
        end_row = max(end_row, start_row + 1)
        end_row = min(end_row, n_rows)
        a, b = indptr[start_row], indptr[end_row]
        rows_p = np.repeat(p[start_row:end_row], counts[start_row:end_row], axis=0)
        np.einsum("nk,nk->n", rows_p, y[cols[a:b]], out=out[a:b])
        start_row = end_row
    return out


def conjugate_gradient_solve(
    cm1: sp.csr_matrix, y: np.ndarray, x0: np.ndarray, regularization: float, steps: int
) -> np.ndarray:
    """Approximately solve every row's normal equations (see module docstring); ``cm1`` = alpha * r."""
    k = y.shape[1]
    yty = (y.T @ y + regularization * np.eye(k, dtype=np.float32)).astype(np.float32)
    pos = cm1.copy()
    pos.data = pos.data + 1.0
    b = np.asarray(pos @ y, dtype=np.float32)

    def apply_a(p: np.ndarray) -> np.ndarray:
        d = _sampled_rowdot(p, y, cm1)
        corr = sp.csr_matrix((cm1.data * d, cm1.indices, cm1.indptr), shape=cm1.shape)
        return p @ yty + np.asarray(corr @ y, dtype=np.float32)

    x = x0.astype(np.float32, copy=True)
    r = b - apply_a(x)
    p = r.copy()
    rs_old = np.einsum("nk,nk->n", r, r)
    for _ in range(steps):
        ap = apply_a(p)
        denom = np.einsum("nk,nk->n", p, ap)
        step = np.where(denom > 1e-20, rs_old / np.maximum(denom, 1e-20), 0.0).astype(np.float32)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = np.einsum("nk,nk->n", r, r)
        beta = np.where(rs_old > 1e-20, rs_new / np.maximum(rs_old, 1e-20), 0.0).astype(np.float32)
        p = r + beta[:, None] * p
        rs_old = rs_new
    return x


class AlsRecommender:
    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 12,
        cg_steps: int = 3,
        seed: int = 42,
    ) -> None:
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.cg_steps, self.seed = iterations, cg_steps, seed
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.user_ids: np.ndarray | None = None
        self.iteration_seconds: list[float] = []

    def fit(
        self, interactions: sp.csr_matrix, callback: Callable[[int, float], None] | None = None
    ) -> AlsRecommender:
        """Alternate user and item solves; ``callback(iteration, seconds)`` after each iteration."""
        cm1 = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        cm1.sum_duplicates()
        cm1.sort_indices()
        cm1.data *= np.float32(self.alpha)
        cm1_t = cm1.T.tocsr()
        cm1_t.sort_indices()
        rng = np.random.default_rng(self.seed)
        n_users, n_items = cm1.shape
        scale = np.float32(0.01)
        x = (rng.standard_normal((n_users, self.factors), dtype=np.float32) * scale)
        y = (rng.standard_normal((n_items, self.factors), dtype=np.float32) * scale)
        self.iteration_seconds = []
        for it in range(self.iterations):
            t0 = time.perf_counter()
            x = conjugate_gradient_solve(cm1, y, x, self.regularization, self.cg_steps)
            y = conjugate_gradient_solve(cm1_t, x, y, self.regularization, self.cg_steps)
            dt = time.perf_counter() - t0
            self.iteration_seconds.append(dt)
            if callback is not None:
                callback(it, dt)
        self.user_factors, self.item_factors = x, y
        return self

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        scores = self.user_factors[users] @ self.item_factors.T
        return top_n(scores, n, user_items if filter_already_liked else None, users)

    def similar_items(self, item_indices, n: int = 20):
        items = np.asarray(item_indices, dtype=np.int64)
        norm = self.item_factors / np.maximum(np.linalg.norm(self.item_factors, axis=1, keepdims=True), 1e-12)
        scores = norm[items] @ norm.T
        scores[np.arange(len(items)), items] = -np.inf
        return top_n(scores, n)

    def save(self, directory: str | Path, item_ids: np.ndarray, user_ids: np.ndarray) -> Path:
        return save_npz(directory, item_ids=np.asarray(item_ids, np.int64), user_ids=np.asarray(user_ids, np.int64),
                        user_factors=self.user_factors, item_factors=self.item_factors)

    @classmethod
    def load(cls, directory: str | Path) -> AlsRecommender:
        arrays = load_npz(directory)
        model = cls(factors=arrays["item_factors"].shape[1])
        model.user_factors = arrays["user_factors"].astype(np.float32)
        model.item_factors = arrays["item_factors"].astype(np.float32)
        model.item_ids, model.user_ids = arrays["item_ids"], arrays["user_ids"]
        return model
