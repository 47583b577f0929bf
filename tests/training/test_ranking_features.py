"""Inline ranker features: RANKER_FEATURES columns, point in time (no future leakage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("recsys.features.schema")

from recsys.platform.data.schema import Dataset  # noqa: E402
from recsys.training.ranking.features import InlineFeatureSource  # noqa: E402


def test_features_ignore_events_at_or_after_the_row_time(small_dataset):
    ev = small_dataset.events
    t = ev["timestamp"].quantile(0.5)
    entity = pd.DataFrame({"user_id": ev["user_id"].iloc[:50].to_numpy(), "item_id": ev["item_id"].iloc[:50].to_numpy(),
                           "event_timestamp": t})
    full = InlineFeatureSource(small_dataset).training_features(entity)
    past_only = Dataset(events=ev[ev["timestamp"] < t], items=small_dataset.items, users=small_dataset.users)
    cut = InlineFeatureSource(past_only).training_features(entity)
    np.testing.assert_array_equal(full, cut)
    assert full.shape == (50, len(InlineFeatureSource(small_dataset).names))
    assert np.isfinite(full).all()


def test_counts_match_a_direct_count(small_dataset):
    src = InlineFeatureSource(small_dataset)
    ev = small_dataset.events
    t = ev["timestamp"].quantile(0.8)
    u, i = int(ev["user_id"].iloc[0]), int(ev["item_id"].iloc[0])
    row = src.training_features(pd.DataFrame({"user_id": [u], "item_id": [i], "event_timestamp": [t]}))[0]
    past = ev[ev["timestamp"] < t]
    col = {n: j for j, n in enumerate(src.names)}
    assert row[col["user_views_all"]] == (past[(past.user_id == u) & (past.event_type == "view")]).shape[0]
    assert row[col["item_clicks_all"]] == (past[(past.item_id == i) & (past.event_type == "click")]).shape[0]
    week = past[past["timestamp"] >= t - pd.Timedelta(days=7)]
    assert row[col["item_views_7d"]] == (week[(week.item_id == i) & (week.event_type == "view")]).shape[0]
