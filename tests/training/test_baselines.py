"""Baselines on the small dataset: beat random, ALS converges, artifacts round-trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys.platform.data.split import split_events
from recsys.training.base import Catalog, IdIndex, interaction_matrix, top_n, user_histories
from recsys.training.baselines import (
    AlsRecommender,
    BprRecommender,
    EaseRecommender,
    EaseTooLargeError,
    ItemKnnRecommender,
    PopularityRecommender,
)
from recsys.training.evaluation import Evaluator


class RandomRecommender:
    def __init__(self, n_items, seed=0):
        self.n_items, self.rng = n_items, np.random.default_rng(seed)

    def recommend(self, users, user_items, n=20, filter_already_liked=True):
        return top_n(self.rng.random((len(users), self.n_items)), n, user_items, np.asarray(users))


@pytest.fixture(scope="module")
def setup(small_dataset):
    split = split_events(small_dataset.events)
    cat = Catalog.from_dataset(small_dataset)
    x = interaction_matrix(pd.concat([split.train, split.validation]), cat)
    ev = Evaluator.from_split(small_dataset, split, cat, ks=(20,), bootstrap_samples=50)
    return split, cat, x, ev


def test_id_index_round_trip_and_unknown():
    idx = IdIndex.from_ids([30, 10, 20, 10])
    assert idx.ids.tolist() == [10, 20, 30]
    assert idx.index_of([20, 99, 10]).tolist() == [1, -1, 0]
    assert idx.id_of([2]).tolist() == [30]


def test_interaction_matrix_weights_and_histories(small_dataset):
    cat = Catalog.from_dataset(small_dataset)
    ev = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [1, 1, 2, 2],
                       "event_type": ["view", "click", "rating", "purchase"],
                       "rating": [np.nan, np.nan, 5.0, np.nan],
                       "timestamp": pd.to_datetime([1, 2, 3, 4], unit="s", utc=True)})
    m = interaction_matrix(ev, cat)
    assert m[0, 0] == pytest.approx(3.0)  # view 1 + click 2
    assert m[0, 1] == pytest.approx(3.0)  # rating 3 * 5/5
    assert m[1, 1] == pytest.approx(4.0)
    h = user_histories(ev, cat, 3)
    assert h[0].tolist() == [1, 0, -1]  # most recent distinct item first


def test_baselines_beat_random(setup):
    split, cat, x, ev = setup
    rand = ev.evaluate("random", RandomRecommender(cat.n_items)).metrics["recall@20"].value
    for name, model in [("popularity", PopularityRecommender().fit(x)),
                        ("item_knn", ItemKnnRecommender(50).fit(x)),
                        ("als", AlsRecommender(factors=16, iterations=8, seed=1).fit(x)),
                        ("bpr", BprRecommender(factors=16, epochs=10, seed=1).fit(x)),
                        ("ease", EaseRecommender(regularization=50.0).fit(x))]:
        r = ev.evaluate(name, model).metrics["recall@20"].value
        assert r > 1.5 * rand, (name, r, rand)


def test_recommend_filters_history(setup):
    _, cat, x, _ = setup
    users = np.arange(20)
    for model in (PopularityRecommender().fit(x), ItemKnnRecommender(20).fit(x),
                  AlsRecommender(factors=8, iterations=2).fit(x), BprRecommender(factors=8, epochs=1).fit(x),
                  EaseRecommender().fit(x)):
        idx, scores = model.recommend(users, x, n=10)
        assert idx.shape == (20, 10)
        for row, u in enumerate(users):
            assert not set(idx[row][idx[row] >= 0]) & set(x[u].indices)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_als_fits_observed_entries_and_is_seeded(setup):
    _, _, x, _ = setup
    a = AlsRecommender(factors=16, iterations=6, regularization=0.05, alpha=2.0, seed=3).fit(x)
    pred = a.user_factors @ a.item_factors.T
    observed = pred[x.toarray() > 0].mean()
    unobserved = pred[x.toarray() == 0].mean()
    assert observed > 0.3 and observed > 3 * unobserved
    b = AlsRecommender(factors=16, iterations=6, regularization=0.05, alpha=2.0, seed=3).fit(x)
    np.testing.assert_allclose(a.item_factors, b.item_factors, rtol=1e-4, atol=1e-5)


def test_als_matches_exact_least_squares_for_one_user():
    """With many CG steps the batched solver reproduces the closed-form HKV user update."""
    from recsys.training.baselines.als import conjugate_gradient_solve

    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 5)).astype(np.float32)
    r = sp.random(4, 30, density=0.3, random_state=1, format="csr", dtype=np.float32)
    r.data[:] = rng.uniform(1, 3, size=r.nnz)
    alpha, reg = 2.0, 0.1
    cm1 = r.copy()
    cm1.data *= alpha
    x = conjugate_gradient_solve(cm1, y, np.zeros((4, 5), np.float32), reg, steps=25)
    for u in range(4):
        c = 1 + alpha * r[u].toarray().ravel()
        p = (r[u].toarray().ravel() > 0).astype(float)
        a = y.T @ np.diag(c) @ y + reg * np.eye(5)
        exact = np.linalg.solve(a, y.T @ (c * p))
        np.testing.assert_allclose(x[u], exact, rtol=1e-3, atol=1e-3)


def test_item_knn_neighbours_are_symmetric_cosine(setup):
    _, _, x, _ = setup
    knn = ItemKnnRecommender(10).fit(x)
    xd = x.toarray()
    norms = np.linalg.norm(xd, axis=0)
    i = int(np.argmax(norms))
    j, w = knn.neighbors[i, 0], knn.weights[i, 0]
    assert w == pytest.approx(xd[:, i] @ xd[:, j] / (norms[i] * norms[j]), rel=1e-4)
    assert i not in knn.neighbors[i]


def test_baseline_npz_round_trip(setup, tmp_store):
    _, cat, x, _ = setup
    models = {"popularity": PopularityRecommender().fit(x), "item_knn": ItemKnnRecommender(10).fit(x),
              "als": AlsRecommender(factors=4, iterations=2).fit(x), "bpr": BprRecommender(factors=4, epochs=1).fit(x),
              "ease": EaseRecommender(keep=20).fit(x)}
    users = np.arange(10)
    for name, model in models.items():
        with tmp_store.write_version(name, "v1", kind="baseline") as d:
            model.save(d, cat.items.ids, cat.users.ids) if name in ("als", "bpr") else model.save(d, cat.items.ids)
        path = tmp_store.local_path(tmp_store.promote(name, "v1"))
        loaded = type(model).load(path)
        np.testing.assert_array_equal(loaded.item_ids, cat.items.ids)
        np.testing.assert_array_equal(loaded.recommend(users, x, 5)[0], model.recommend(users, x, 5)[0])


def test_ease_matches_the_closed_form():
    """Unpruned EASE equals B = -P / diag(P), P = (X^T X + lambda I)^-1, diag(B) = 0 (Steck 2019)."""
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 12)) < 0.3).astype(np.float32))
    lam = 5.0
    model = EaseRecommender(regularization=lam, keep=11).fit(x)
    xd = x.toarray().astype(np.float64)
    p = np.linalg.inv(xd.T @ xd + lam * np.eye(12))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model._b.toarray(), b, rtol=1e-3, atol=1e-4)
    with pytest.raises(EaseTooLargeError, match="max_items=5"):
        EaseRecommender(max_items=5).fit(x)


def test_bpr_ranks_observed_above_unobserved_and_is_seeded(setup):
    _, _, x, _ = setup
    a = BprRecommender(factors=16, epochs=5, seed=3).fit(x)
    pred = a.user_factors @ a.item_factors.T
    xd = x.toarray() > 0
    # AUC over (observed, unobserved) pairs of each user, averaged: BPR's own objective
    auc = np.mean([(pred[u][xd[u]][:, None] > pred[u][~xd[u]][None, :]).mean() for u in range(50) if xd[u].any()])
    assert auc > 0.75, auc
    b = BprRecommender(factors=16, epochs=5, seed=3).fit(x)
    np.testing.assert_allclose(a.item_factors, b.item_factors, rtol=1e-5, atol=1e-6)
