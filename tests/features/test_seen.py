"""The online seen set: every past item of a user (serving's already-seen filter) and their distinct history.

Checked against the training side's definitions on the real Redis: the set equals the user's items in
the data, and the history equals ``recsys.training.base.user_histories`` (newest distinct first);
events applied by the stream consumer extend both at once; the live part stays bounded.
"""

from __future__ import annotations

import uuid

import numpy as np

from recsys.features import FeatureStoreConfig, OnlineFeatureClient
from recsys.features.seen import pack, recent_distinct, unpack


def test_pack_round_trips_full_int64_range():
    ids = [0, 7, -3, 2**63 - 1, -(2**63), 7]
    assert unpack(pack(ids)).tolist() == ids
    assert unpack(pack(ids[:2]), None, pack(ids[2:3])).tolist() == ids[:3]
    assert len(unpack(None, b"")) == 0


def test_recent_distinct_is_newest_distinct_first():
    seq = np.array([1, 2, 3, 2, 4, 4, 1])  # oldest first
    assert recent_distinct(seq, 10) == [1, 4, 2, 3]
    assert recent_distinct(seq, 2) == [1, 4]
    assert recent_distinct(seq, 2, tail=3) == [1, 4]


def test_materialized_seen_set_and_history_match_the_data(feature_cfg, small_dataset):
    from recsys.training.base import Catalog, user_histories

    cat = Catalog.from_dataset(small_dataset)
    hist = user_histories(small_dataset.events, cat, feature_cfg.history_items)
    client = OnlineFeatureClient(feature_cfg)
    ev = small_dataset.events
    for user in small_dataset.users["user_id"].to_numpy()[::37][:8].tolist():
        f = client.fetch(user, [])
        mine = set(ev.loc[ev.user_id == user, "item_id"].tolist())
        assert set(f.seen_item_ids.tolist()) == mine
        row = hist[cat.users.index_of([user])[0]]
        expected = [int(i) for i in cat.items.id_of(row[row >= 0])]
        assert f.history_item_ids == expected[:feature_cfg.history_items]


def test_applied_events_extend_seen_set_and_history(ingest_cfg, small_dataset, tmp_path):
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = FeatureStoreConfig(**{**ingest_cfg.model_dump(), "project": f"recsys_t{uuid.uuid4().hex[:8]}",
                                "event_log_path": tmp_path / "events.jsonl", "seen_items": 10})
    user = 700_000_010  # a new user: no batch part
    consumer = StreamConsumer(cfg, name="seen", stream_cfg=StreamConfig(block_ms=1))
    try:
        consumer.ensure_group()
        items = [5, 6, 5, 7] + list(range(100, 200))
        EventIngestor(cfg).accept([{"user_id": user, "item_id": i, "event_type": "click"} for i in items[:4]])
        assert consumer.drain(5)
        f = OnlineFeatureClient(cfg).fetch(user, [])
        assert sorted(set(f.seen_item_ids.tolist())) == [5, 6, 7]
        assert f.history_item_ids == [7, 5, 6]
        EventIngestor(cfg).accept([{"user_id": user, "item_id": i, "event_type": "view"} for i in items[4:]])
        assert consumer.drain(5)
        f = OnlineFeatureClient(cfg).fetch(user, [])
        seen = f.seen_item_ids.tolist()
        assert consumer.redis.strlen(consumer.keys.seen_live(user)) <= 24 * cfg.seen_items, "bounded"
        assert 10 <= len(seen) < 100 and seen[-10:] == list(range(190, 200)), "the newest ids are kept"
        assert f.history_item_ids == list(range(199, 199 - cfg.history_items, -1))
    finally:
        consumer.stop()
        delete_project_keys(cfg)


def test_seen_items_zero_keeps_no_set(ingest_cfg, tmp_path):
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = FeatureStoreConfig(**{**ingest_cfg.model_dump(), "project": f"recsys_t{uuid.uuid4().hex[:8]}",
                                "event_log_path": tmp_path / "events.jsonl", "seen_items": 0})
    user = 700_000_011
    consumer = StreamConsumer(cfg, name="noseen", stream_cfg=StreamConfig(block_ms=1))
    try:
        consumer.ensure_group()
        EventIngestor(cfg).accept([{"user_id": user, "item_id": i, "event_type": "click"} for i in (1, 2, 1)])
        assert consumer.drain(5)
        f = OnlineFeatureClient(cfg).fetch(user, [])
        assert len(f.seen_item_ids) == 0
        assert f.history_item_ids == [1, 2], "falls back to the distinct recent events"
    finally:
        consumer.stop()
        delete_project_keys(cfg)
