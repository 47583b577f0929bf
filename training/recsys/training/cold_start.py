"""Users with no history: every recommender answers them with recent-window popularity.

Why: about half of the users the global_time evaluator keeps have nothing before the cut. A model that
reads a history (EASE, item-kNN, SASRec, the two-tower fold-in) scores every item the same for them and
returned the lowest ids; ALS returned a near-random vector. Serving already answers such users from its
popularity prior (``cold_start`` mode); offline, :class:`ColdStartFallback` does the same, so a model's
row in the quality table measures the model on the users it can serve plus the one shared fallback on the
rest (``benchmarks/quality.py`` prints the warm and cold slices next to the overall rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.training.base import Catalog, interaction_matrix
from recsys.training.baselines.popularity import PopularityRecommender

RECENT_WINDOW_DAYS = 30
"""Popularity over the last 30 days of the visible history: recent enough to follow trends, wide enough
to hold thousands of events on the datasets here (ml-latest-small's last month, the synthetic generator's)."""


def recent_popularity(history: pd.DataFrame, catalog: Catalog,
                      window_days: float = RECENT_WINDOW_DAYS) -> PopularityRecommender:
    """Distinct users per item over the last ``window_days`` of ``history``; all of it when that is empty,
    with the all-time counts as a tie-breaker (a recent window leaves many items at zero)."""
    all_time = PopularityRecommender().fit(interaction_matrix(history, catalog))
    if history.empty:
        return all_time
    ts = pd.to_datetime(history["timestamp"])
    recent = history[ts >= ts.max() - pd.Timedelta(days=window_days)]
    model = PopularityRecommender().fit(interaction_matrix(recent, catalog))
    tie = all_time.scores / max(float(all_time.scores.max()), 1.0)  # in [0, 1]: orders items with equal counts
    model.scores = (model.scores + tie).astype(np.float32)
    return model


def cold_users(users: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
    """Bool mask over ``users``: no item in their history row."""
    return np.diff(user_items.indptr)[np.asarray(users, np.int64)] == 0


class ColdStartFallback:
    """A :class:`~recsys.training.base.Recommender` that hands users with an empty history to ``fallback``."""

    def __init__(self, model, fallback: PopularityRecommender):
        self.model, self.fallback = model, fallback

    def __getattr__(self, name):  # the wrapped model's own attributes (ctx, user_embeddings, ...)
        if name in ("model", "fallback"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __setattr__(self, name, value):  # transparent: setting ``histories`` etc. reaches the wrapped model
        if name in ("model", "fallback"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.model, name, value)

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, np.int64)
        cold = cold_users(users, user_items)
        idx = np.full((len(users), n), -1, np.int64)
        val = np.full((len(users), n), -np.inf, np.float32)
        for mask, model in ((~cold, self.model), (cold, self.fallback)):
            if mask.any():
                i, v = model.recommend(users[mask], user_items, n=n, filter_already_liked=filter_already_liked)
                idx[mask, : i.shape[1]] = i[:, :n]
                if v is not None:
                    val[mask, : v.shape[1]] = v[:, :n]
        return idx, val

    def similar_items(self, item_indices, n: int = 20):
        return self.model.similar_items(item_indices, n)
