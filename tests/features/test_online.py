"""Online store: materialized values equal offline values; the batched reader agrees with Feast's."""

from __future__ import annotations

import socket
import time

import numpy as np
import pandas as pd
import pytest

from recsys.features import RANKER_FEATURES, FeatureStoreConfig, FeatureStoreUnavailable, OnlineFeatureClient
from recsys.features.offline import load_metadata
from tests.ports import free_port


@pytest.fixture(scope="module")
def client(feature_cfg):
    c = OnlineFeatureClient(feature_cfg)
    yield c
    c.close()


def _sample(small_dataset, n_users=5, n_items=40, seed=1):
    rng = np.random.default_rng(seed)
    users = rng.choice(small_dataset.users.user_id.to_numpy(), size=n_users, replace=False)
    items = rng.choice(small_dataset.items.item_id.to_numpy(), size=n_items, replace=False)
    return [int(u) for u in users], [int(i) for i in items]


def test_online_read_equals_offline_for_same_entity_and_time(feature_cfg, client, small_dataset):
    """apply -> materialize -> fetch() == get_training_features() at the same request time."""
    from recsys.features import get_training_features

    users, items = _sample(small_dataset)
    at = pd.Timestamp(load_metadata(feature_cfg)["last_snapshot"]) + pd.Timedelta(hours=7, minutes=13)
    entity_df = pd.DataFrame([(u, i, at) for u in users for i in items],
                             columns=["user_id", "item_id", "event_timestamp"])
    offline = get_training_features(feature_cfg, entity_df, extra=("user_recent_item_ids",))
    for k, u in enumerate(users):
        online = client.fetch(u, items, at=at.timestamp())
        assert not online.user_missing and not online.missing.any()
        expected = offline.iloc[k * len(items):(k + 1) * len(items)]
        np.testing.assert_allclose(online.items, expected[RANKER_FEATURES].to_numpy(np.float32), rtol=1e-5,
                                   atol=1e-4, err_msg=f"user {u}")
        assert online.recent_item_ids == [int(x) for x in expected["user_recent_item_ids"].iloc[0]]


def test_batched_reader_agrees_with_feast_get_online_features(feature_cfg, client, small_dataset):
    from recsys.features.schema import ITEM_RAW_FEATURES, USER_RAW_FEATURES, VIEW_FEATURES
    from recsys.features.store import feature_store

    users, items = _sample(small_dataset, n_users=1, n_items=25, seed=3)
    refs = [f"{v}:{n}" for v, feats in VIEW_FEATURES.items() for n in feats]
    feast_rows = feature_store(feature_cfg).get_online_features(
        features=refs, entity_rows=[{"user_id": users[0], "item_id": i} for i in items]).to_dict()
    ours_user = client.read_user_rows(users)[0]
    for name in USER_RAW_FEATURES:
        np.testing.assert_allclose(np.asarray(ours_user[name], dtype=float),
                                   np.asarray(feast_rows[name][0], dtype=float), rtol=1e-6, err_msg=name)
    full = OnlineFeatureClient(feature_cfg, item_features=list(ITEM_RAW_FEATURES))
    cols, missing = full.read_item_columns(items)
    assert not missing.any()
    for name in ITEM_RAW_FEATURES:
        for j in range(len(items)):
            np.testing.assert_allclose(np.asarray(cols[name][j], dtype=float),
                                       np.asarray(feast_rows[name][j], dtype=float), rtol=1e-6, err_msg=name)


def test_unknown_entities_are_flagged_missing(client, small_dataset):
    users, items = _sample(small_dataset, n_users=1, n_items=3)
    out = client.fetch(users[0], [*items, 987654321])
    assert out.items.shape == (4, len(RANKER_FEATURES)) and out.items.dtype == np.float32
    assert out.missing.tolist() == [False, False, False, True]
    assert not out.items[3, RANKER_FEATURES.index("item_views_all")]
    assert client.fetch(987654321, items).user_missing


def test_user_only_reads_answer_like_a_decode_and_share_nothing_mutable(client, small_dataset):
    """A user-only read (serving's history stage) reuses one decoded set of empty item columns; each answer
    must still equal a fresh decode and own its containers (mutating one answer leaves the next alone)."""
    users, _ = _sample(small_dataset, n_users=1, n_items=1)
    fresh_cols, fresh_missing = client._decode_item_columns([])
    first = client.fetch(users[0], [])
    assert first.items.shape == (0, len(RANKER_FEATURES)) and first.missing.shape == (0,)
    assert set(first.item_raw) == {k for k in fresh_cols if k not in RANKER_FEATURES}
    for name, col in first.item_raw.items():
        assert type(col) is type(fresh_cols[name]) and len(col) == 0
        if isinstance(col, list):
            col.append("mutated")
    second = client.fetch(users[0], [])
    assert all(len(col) == 0 for col in second.item_raw.values())
    assert np.array_equal(second.missing, fresh_missing)


def test_unreachable_redis_raises_quickly(feature_cfg):
    cfg = FeatureStoreConfig(**{**feature_cfg.model_dump(), "redis_url": f"redis://127.0.0.1:{free_port()}/15"})
    client = OnlineFeatureClient(cfg)
    t0 = time.perf_counter()
    with pytest.raises(FeatureStoreUnavailable, match="unavailable"):
        client.fetch(1, list(range(1, 501)))
    assert time.perf_counter() - t0 < 2.0


def test_silent_redis_times_out_within_read_timeout(feature_cfg):
    """A server that accepts but never answers (hung Redis) is bounded by read_timeout_s."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        cfg = FeatureStoreConfig(**{**feature_cfg.model_dump(), "redis_url": f"redis://127.0.0.1:{port}/15",
                                    "read_timeout_s": 0.3})
        t0 = time.perf_counter()
        with pytest.raises(FeatureStoreUnavailable):
            OnlineFeatureClient(cfg).fetch(1, [1, 2, 3])
        assert time.perf_counter() - t0 < 2.0
