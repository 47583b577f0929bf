"""One history everywhere: training, the offline evaluator and serving read the same sequence.

The events below hold what broke the old code: a same-second burst written in file order 30, 10, 20,
a repeat (10 again, later), and a second burst (7, 3). The rule (``recsys.platform.data.history``):
distinct items by last interaction, then item id. Before, training kept first interactions in file
order, the evaluator reversed same-second items, and serving sorted them by id: three different
newest items for the same user.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from recsys.training.base import Catalog, IdIndex, user_histories

S = 10**9
USER = 1
EXPECTED = [7, 3, 10, 5, 30, 20]  # newest first


def _events() -> pd.DataFrame:
    rows = [(USER, 30, 100), (USER, 10, 100), (USER, 20, 100), (USER, 5, 150), (USER, 10, 200),
            (USER, 7, 300), (USER, 3, 300), (2, 40, 50), (2, 30, 60)]
    return pd.DataFrame({"user_id": np.array([r[0] for r in rows], np.int64),
                         "item_id": np.array([r[1] for r in rows], np.int64),
                         "timestamp": pd.to_datetime([r[2] * S for r in rows]),
                         "event_type": "click", "rating": np.float32("nan")})


@pytest.fixture(scope="module")
def history_case():
    ev = _events()
    cat = Catalog(users=IdIndex.from_ids([1, 2]), items=IdIndex.from_ids([3, 5, 7, 10, 20, 30, 40]))
    return ev, cat


def _ids(cat: Catalog, row: np.ndarray) -> list[int]:
    return [int(i) for i in cat.items.id_of(row[row >= 0])]


def test_training_sequences_follow_the_history_order(history_case):
    from recsys.training.item_features import ItemFeatures
    from recsys.training.sequential.data import build_sequence_data
    from recsys.training.two_tower.data import build_retrieval_data

    ev, cat = history_case
    sasrec = build_sequence_data(ev, ev.iloc[:0], cat, length=10, max_windows_per_user=None)
    u = int(cat.users.index_of([USER])[0])
    row = np.flatnonzero((sasrec.inputs < cat.n_items).any(axis=1) & (sasrec.user == u))[-1]
    seq = [*sasrec.inputs[row][sasrec.inputs[row] < cat.n_items], sasrec.targets[row][-1]]
    assert _ids(cat, np.array(seq)[::-1]) == EXPECTED, "SASRec's training sequence"

    items = pd.DataFrame({"item_id": cat.items.ids, "title": "t", "genres": "g", "description": "d"})
    tt = build_retrieval_data(ev, ev.iloc[:0], cat, ItemFeatures.build(items, cat), history_length=10)
    mine = np.flatnonzero(tt.ex_user == u)
    last = mine[np.argmax(tt.ex_pos[mine])]
    hist = tt.histories(tt.ex_user[[last]], tt.ex_pos[[last]], 10)[0]
    assert _ids(cat, np.r_[tt.ex_item[last], hist]) == EXPECTED, "the two-tower's last example and its history"


def test_evaluator_history_follows_the_history_order(history_case):
    ev, cat = history_case
    hist = user_histories(ev.sample(frac=1.0, random_state=3), cat, 10)  # row order must not matter
    assert _ids(cat, hist[cat.users.index_of([USER])[0]]) == EXPECTED
    assert _ids(cat, user_histories(ev, cat, 4)[cat.users.index_of([USER])[0]]) == EXPECTED[:4], "length"


def test_served_history_follows_the_history_order(history_case, redis_url, tmp_path):
    """The materialized seen set on the real Redis, read by the online client serving uses."""
    import pyarrow.parquet as pq
    import redis

    from recsys.features import FeatureStoreConfig, OnlineFeatureClient
    from recsys.features.online import delete_project_keys
    from recsys.features.realtime import OverlayKeys
    from recsys.features.seen import seen_table, write_seen_sets

    ev, _ = history_case
    cfg = FeatureStoreConfig(repo_dir=tmp_path, redis_url=redis_url, project=f"hist{uuid.uuid4().hex[:8]}")
    path = tmp_path / "seen.parquet"
    pq.write_table(seen_table(ev["user_id"].to_numpy(), ev["item_id"].to_numpy(),
                              ev["timestamp"].astype("int64").to_numpy()), path)
    r = redis.Redis(**cfg.redis_kwargs())
    try:
        write_seen_sets(r, OverlayKeys(cfg.project), path, pd.Timestamp(400 * S).to_pydatetime(), cap=100)
        got = OnlineFeatureClient(cfg).fetch(USER, []).history_item_ids
        assert got == EXPECTED
    finally:
        delete_project_keys(cfg)


def test_length_settings_default_to_the_history_module():
    from recsys.features import FeatureStoreConfig
    from recsys.platform.data.history import HISTORY_LENGTH
    from recsys.training.config import TrainingConfig
    from recsys.training.sequential.config import SequentialConfig

    assert TrainingConfig().retrieval.history_length == HISTORY_LENGTH
    assert SequentialConfig().max_length == HISTORY_LENGTH
    assert FeatureStoreConfig().history_items == HISTORY_LENGTH  # serving feeds what the models train on


def test_served_item_knn_reads_the_same_prefix_of_a_full_length_history_as_training():
    """Serving feeds HISTORY_LENGTH items; its item-kNN source must still use only the newest KNN_RECENT_ITEMS,
    as training's kNN candidates and scores do (with the whole 50 it changed 3 of 50 users' served lists in the
    evaluator-parity test: the hidden 20-cap was the served history's old length)."""
    from recsys.platform.data.history import HISTORY_LENGTH
    from recsys.platform.ranking_features import KNN_RECENT_ITEMS, knn_scores
    from recsys.serving.models.artifacts import IdIndex, ItemKnnArtifacts
    from recsys.serving.pipeline.candidates.sources import ItemKnnCandidates

    rng = np.random.default_rng(3)
    n, k = 400, 8
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    nb = rng.integers(0, n, size=(n, k))
    w = rng.random((n, k)).astype(np.float32)
    src = ItemKnnCandidates(ItemKnnArtifacts("v", ids, IdIndex(ids), nb, w))
    rows = rng.permutation(n)[:HISTORY_LENGTH]
    got_ids, got_scores = src.from_history(ids[rows].tolist(), 30)
    short_ids, _ = src.from_history(ids[rows[:KNN_RECENT_ITEMS]].tolist(), 30)
    assert got_ids.tolist() == short_ids.tolist()
    offline = knn_scores(rows[None, :], (got_ids - 1000)[None, :], nb, w)[0]  # training's score of the same items
    np.testing.assert_allclose(got_scores, offline, rtol=1e-5)
