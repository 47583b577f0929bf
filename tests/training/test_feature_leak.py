"""The Feast feature path never hands the ranker events its history hides (issue 24: leave_last_out leak).

A Feast store is built from the whole dataset and read at one instant. Under ``leave_last_out`` the
instant (end of the visible data) is after most users' own held-out events, so the store would count them.
The context refuses that combination with a clear error (``auto`` picks inline features instead).
"""

from __future__ import annotations

import pytest

from recsys.platform.data.split import split_events
from recsys.training.base import Catalog
from recsys.training.ranking.context import FeatureLeakError, RankingContext, hidden_events_before
from recsys.training.ranking.features import FeastFeatureSource


def test_leave_last_out_history_hides_events_a_global_cut_does_not(small_dataset):
    ds = small_dataset
    for protocol, leaks in (("leave_last_out", True), ("global_time", False)):
        train = split_events(ds.events, protocol).train
        t_ns = int(train["timestamp"].max().value) + 1
        assert (hidden_events_before(ds, train, t_ns) > 0) == leaks, protocol


def test_feast_source_with_a_per_user_cut_is_refused(small_dataset, tmp_path):
    from recsys.features import FeatureStoreConfig
    from recsys.training.config import RankingConfig

    ds = small_dataset
    train = split_events(ds.events, "leave_last_out").train
    feast = FeastFeatureSource(FeatureStoreConfig(repo_dir=tmp_path))
    with pytest.raises(FeatureLeakError, match="leave_last_out"):
        RankingContext(ds, train, Catalog.from_dataset(ds), retrieval=None, rc=RankingConfig(), store_source=feast)

