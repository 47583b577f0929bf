"""The knobs the validation grids tune: iALS's unobserved weight (Rendle et al. 2022), item-kNN shrinkage."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.training.baselines import ItemKnnRecommender
from recsys.training.baselines.als import _cg_solve, to_torch_csr


def test_ials_solve_weights_every_pair_by_w0_and_observed_pairs_by_one_plus_alpha_r():
    rng = np.random.default_rng(0)
    r = sp.random(5, 7, density=0.4, random_state=1, format="csr", dtype=np.float32)
    r.data[:] = 1.0
    alpha, lam, w0, k = 3.0, 0.5, 0.1, 4
    y = rng.standard_normal((7, k)).astype(np.float32)
    cm1 = r.copy()
    cm1.data *= alpha
    x = _cg_solve(to_torch_csr(cm1), torch.from_numpy(y), torch.zeros(5, k), lam, steps=20,
                  unobserved_weight=w0).numpy()
    for u in range(5):  # closed form of min sum_i c_ui (p_ui - x.y_i)^2 + w0 sum_unobserved (x.y_i)^2 + lam |x|^2
        c = np.full(7, w0)
        c[r[u].indices] = 1.0 + alpha * r[u].data
        p = np.zeros(7)
        p[r[u].indices] = 1.0
        want = np.linalg.solve(y.T @ (c[:, None] * y) + lam * np.eye(k), y.T @ (c * p))
        np.testing.assert_allclose(x[u], want, rtol=1e-3, atol=1e-4)


def test_item_knn_shrinkage_divides_by_norms_plus_shrinkage():
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [0, 0, 1]], np.float32))
    m = ItemKnnRecommender(neighbors=2, shrinkage=10.0).fit(x)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    dense = (x.T @ x).toarray() / (np.outer(norms, norms) + 10.0)
    for i in range(3):
        for j, w in zip(m.neighbors[i], m.weights[i], strict=True):
            assert w == np.float32(dense[i, j])
    plain = ItemKnnRecommender(neighbors=2).fit(x)
    assert plain.weights.max() > m.weights.max()
