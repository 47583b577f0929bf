"""Users with no history get recent-window popularity from every recommender (recsys.training.cold_start)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.training.base import Catalog, IdIndex, interaction_matrix
from recsys.training.cold_start import ColdStartFallback, recent_popularity

DAY = pd.Timedelta(days=1)


def _events() -> tuple[pd.DataFrame, Catalog]:
    t0 = pd.Timestamp("2024-01-01")
    rows = [(1, 10, t0), (2, 10, t0), (3, 10, t0),  # item 10: popular long ago
            (1, 11, t0 + 60 * DAY), (2, 11, t0 + 61 * DAY),  # item 11: popular in the last month
            (3, 12, t0 + 62 * DAY)]
    ev = pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                       "timestamp": [r[2] for r in rows], "event_type": "click", "rating": np.nan})
    return ev, Catalog(users=IdIndex.from_ids([1, 2, 3, 4]), items=IdIndex.from_ids([10, 11, 12, 13]))


def test_recent_popularity_ranks_the_last_window_first():
    ev, cat = _events()
    top, _ = recent_popularity(ev, cat, window_days=30).recommend(np.array([3]), sp.csr_matrix((4, 4)), n=3)
    assert cat.items.id_of(top[0]).tolist() == [11, 12, 10], "recent counts first, all-time counts break ties"


def test_cold_users_get_the_fallback_and_warm_users_the_model():
    ev, cat = _events()
    seen = interaction_matrix(ev, cat)

    class Lowest:  # what EASE/kNN used to return for an empty history: the lowest indices
        def recommend(self, users, user_items, n=20, filter_already_liked=True):
            return np.tile(np.arange(n), (len(users), 1)), np.zeros((len(users), n), np.float32)

    rec = ColdStartFallback(Lowest(), recent_popularity(ev, cat, window_days=30))
    idx, _ = rec.recommend(np.array([0, 3]), seen, n=2)  # user 1 (warm), user 4 (no history)
    assert idx[0].tolist() == [0, 1]
    assert cat.items.id_of(idx[1]).tolist() == [11, 12]

