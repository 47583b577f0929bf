"""BPR's negative check: the per-row bisection answers exactly what the global code search answered."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.training.baselines.bpr import row_contains


def test_row_contains_matches_a_global_search_of_every_code():
    rng = np.random.default_rng(3)
    n_users, n_items = 300, 500
    x = sp.random(n_users, n_items, density=0.05, format="csr", random_state=4)
    keep = np.ones(n_users)
    keep[7] = 0  # an empty row
    x = sp.csr_matrix(sp.diags(keep) @ x)
    x.eliminate_zeros()
    x.sort_indices()
    users = np.repeat(np.arange(n_users), np.diff(x.indptr))
    codes = np.sort(users * n_items + x.indices)
    u = rng.integers(0, n_users, 20_000)
    j = np.where(rng.random(20_000) < 0.5, rng.integers(0, n_items, 20_000),
                 x.indices[rng.integers(0, len(x.indices), 20_000)])  # half drawn from real positives' columns
    c = u * n_items + j
    expected = codes[np.minimum(np.searchsorted(codes, c), len(codes) - 1)] == c
    got = row_contains(x.indptr.astype(np.int64), codes % n_items, u, j)
    assert expected.sum() > 100  # the check sees hits as well as misses
    np.testing.assert_array_equal(got, expected)
    assert not row_contains(x.indptr.astype(np.int64), codes % n_items, np.array([7]), np.array([0]))[0]
