"""Real-time path: accepted events reach the online features; bad events write nothing; nothing accepted is lost.

The stream tests run against the real Redis (own Feast project each) and, for outages, a private
``redis-server`` that the test freezes (SIGSTOP: a stall) and kills (a crash) - never the shared one.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from recsys.features import (
    RANKER_FEATURES,
    EventValidationError,
    FeatureStoreConfig,
    OnlineFeatureClient,
    ingest_event,
    ingest_events,
    read_log,
)


def _now_iso(offset_s: float = 0.0) -> str:
    return pd.Timestamp(time.time() + offset_s, unit="s", tz="UTC").isoformat()


def _known(small_dataset, k=0):
    return int(small_dataset.users.user_id.iloc[k]), int(small_dataset.items.item_id.iloc[k])


def test_pushed_event_changes_online_features_within_one_call(ingest_cfg, small_dataset):
    user, item = _known(small_dataset, 3)
    client = OnlineFeatureClient(ingest_cfg)
    before = client.fetch(user, [item])
    result = ingest_event(ingest_cfg, {"user_id": user, "item_id": item, "event_type": "click",
                                        "timestamp": _now_iso()})
    assert result.pushed and result.online_error is None, result
    after = client.fetch(user, [item])  # the very next read
    col = RANKER_FEATURES.index
    for name in ("user_clicks_7d", "user_clicks_30d", "user_clicks_all", "item_clicks_7d", "item_clicks_all"):
        assert after.items[0, col(name)] == before.items[0, col(name)] + 1, name
    assert after.recent_item_ids[0] == item
    assert after.items[0, col("ui_in_recent")] == 1.0
    assert after.items[0, col("user_days_since_last_event")] < 0.01
    assert after.user["user_hour_counts"] != before.user["user_hour_counts"]


def test_batch_ingest_rating_updates_average(ingest_cfg, small_dataset):
    user, item = _known(small_dataset, 5)
    client = OnlineFeatureClient(ingest_cfg)
    before = client.fetch(user, [item]).user
    result = ingest_events(ingest_cfg, [
        {"user_id": user, "item_id": item, "event_type": "rating", "rating": 5, "timestamp": _now_iso(-60)},
        {"user_id": user, "item_id": item, "event_type": "rating", "rating": 1.0, "timestamp": _now_iso()},
    ])
    assert result.pushed and len(result.event_ids) == 2
    after = client.fetch(user, [item]).user
    n0 = before["user_ratings_all"]
    assert after["user_ratings_all"] == n0 + 2
    assert after["user_avg_rating"] == pytest.approx((before["user_avg_rating"] * n0 + 6) / (n0 + 2), rel=1e-5)


BAD_EVENTS = [
    ({"item_id": 1, "event_type": "view", "timestamp": "now"}, "user_id"),
    ({"user_id": "U", "item_id": 1, "event_type": "view", "timestamp": _now_iso()}, "user_id"),
    ({"user_id": 2**63, "item_id": 1, "event_type": "view", "timestamp": _now_iso()}, "user_id"),
    ({"user_id": 1, "item_id": -(2**63) - 1, "event_type": "view", "timestamp": _now_iso()}, "item_id"),
    ({"user_id": True, "item_id": 1, "event_type": "view"}, "user_id"),
    ({"user_id": 1, "item_id": 1, "event_type": "like", "timestamp": _now_iso()}, "event_type"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": "yesterday-ish"}, "timestamp"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": "1999-01-01T00:00:00Z"}, "timestamp"),
    ({"user_id": 1, "item_id": 1, "event_type": "rating", "rating": 7, "timestamp": _now_iso()}, "rating"),
    ({"user_id": 1, "item_id": 1, "event_type": "rating", "timestamp": _now_iso()}, "rating"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "rating": 3, "timestamp": _now_iso()}, "rating"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": _now_iso(), "colour": "red"}, "colour"),
]


def _log_state(cfg):
    path = cfg.log_path
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        json.loads(line)  # every line parses
    return len(lines)


@pytest.mark.parametrize(("event", "field"), BAD_EVENTS, ids=[f for _, f in BAD_EVENTS])
def test_bad_events_are_rejected_and_log_untouched(ingest_cfg, small_dataset, event, field):
    before = _log_state(ingest_cfg)
    with pytest.raises(EventValidationError) as err:
        ingest_event(ingest_cfg, event)
    assert err.value.field == field
    assert _log_state(ingest_cfg) == before


def test_batch_is_all_or_nothing(ingest_cfg, small_dataset):
    user, item = _known(small_dataset)
    before = _log_state(ingest_cfg)
    good = {"user_id": user, "item_id": item, "event_type": "view", "timestamp": _now_iso()}
    with pytest.raises(EventValidationError) as err:
        ingest_events(ingest_cfg, [good, good, {**good, "event_type": "teleport"}])
    assert err.value.field == "event_type" and err.value.index == 2
    assert _log_state(ingest_cfg) == before


def test_torn_last_line_is_reported_and_isolated(tmp_path):
    from recsys.features.event_log import EventLog

    log = EventLog(tmp_path / "events.jsonl")
    log.append([{"n": 1}])
    with open(log.path, "ab") as f:
        f.write(b'{"n": 2, "trunc')  # a writer died mid-record
    assert read_log(log.path).torn_tail
    log.append([{"n": 3}, {"n": 4}])
    result = read_log(log.path)
    assert [r["n"] for r in result.records] == [1, 3, 4]
    assert result.bad_lines == [2] and not result.torn_tail


# ------------------------------------------------------------------ events from anyone
def test_never_seen_user_and_item_are_accepted_and_build_a_profile(ingest_cfg, small_dataset):
    user = 900_000_000 + uuid.uuid4().int % 10**8  # not in the dataset, no Feast row
    items = [int(x) for x in small_dataset.items.item_id.iloc[10:13]]
    new_item = 987_654_321
    client = OnlineFeatureClient(ingest_cfg)
    assert client.fetch(user, items).user_missing
    result = ingest_events(ingest_cfg, [{"user_id": user, "item_id": i, "event_type": "click"}  # no timestamp: now
                                        for i in [*items, new_item]])
    assert result.pushed, result.online_error
    after = client.fetch(user, [*items, new_item])
    col = RANKER_FEATURES.index
    assert not after.user_missing
    assert after.recent_item_ids == [new_item, *items[::-1]], "most recent first"
    assert after.user["user_clicks_7d"] == after.user["user_clicks_all"] == 4
    assert after.items[:, col("ui_in_recent")].tolist() == [1.0] * 4
    assert after.items[3, col("item_clicks_all")] == 1 and not after.missing[3], "a new item has counts too"
    assert after.items[0, col("user_days_since_last_event")] < 0.01
    assert sum(after.user["user_genre_weights"]) > 0, "genre weights come from the clicked items' genres"


def test_future_timestamp_counts_as_now_and_old_ones_only_in_wide_windows(ingest_cfg, small_dataset):
    user, item = 800_000_000 + uuid.uuid4().int % 10**8, int(small_dataset.items.item_id.iloc[20])
    result = ingest_events(ingest_cfg, [
        {"user_id": user, "item_id": item, "event_type": "view", "timestamp": _now_iso(86400)},  # client clock ahead
        {"user_id": user, "item_id": item, "event_type": "view", "timestamp": _now_iso(-10 * 86400)},
        {"user_id": user, "item_id": item, "event_type": "view", "timestamp": _now_iso(-40 * 86400)},
    ])
    assert result.pushed
    assert result.records[0]["ts"] <= time.time() and "client_timestamp" in result.records[0]
    u = OnlineFeatureClient(ingest_cfg).fetch(user, []).user
    assert (u["user_views_7d"], u["user_views_30d"], u["user_views_all"]) == (1, 2, 3), "day buckets, read-time"


def test_windowed_counts_decay_as_days_pass(ingest_cfg):
    from recsys.features.realtime import window_counts

    today = int(time.time() // 86400)
    h = {"c:clicks:all": "5", f"c:clicks:{today}": "1", f"c:clicks:{today - 6}": "1", f"c:clicks:{today - 7}": "1",
         f"c:clicks:{today - 29}": "1", f"c:clicks:{today - 30}": "1"}
    assert window_counts(h, today) == {("clicks", "all"): 5, ("clicks", "7d"): 2, ("clicks", "30d"): 4}
    # eight days later the same buckets count less, without any rebuild
    assert window_counts(h, today + 8) == {("clicks", "all"): 5, ("clicks", "30d"): 3}


# ------------------------------------------------------------------ atomic, exactly once
def _project_cfg(cfg, tmp_path, **over) -> FeatureStoreConfig:
    return FeatureStoreConfig(**{**cfg.model_dump(), "project": f"recsys_t{uuid.uuid4().hex[:8]}",
                                 "event_log_path": tmp_path / "events.jsonl", **over})


def test_200_concurrent_events_for_one_user_count_exactly_200(ingest_cfg, small_dataset, tmp_path):
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = _project_cfg(ingest_cfg, tmp_path)
    user, item = 700_000_001, int(small_dataset.items.item_id.iloc[0])
    ingestor = EventIngestor(cfg)
    consumers = [StreamConsumer(cfg, name=f"c{k}", stream_cfg=StreamConfig(batch=7, block_ms=50)) for k in range(3)]
    try:
        for c in consumers:  # three consumers apply while 16 threads append: increments race on one user
            c.ensure_group()
            c.start()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda _: ingestor.accept([{"user_id": user, "item_id": item,
                                                            "event_type": "click"}]).event_id, range(200)))
        assert len(set(ids)) == 200
        deadline = time.time() + 20
        client = OnlineFeatureClient(cfg)
        while time.time() < deadline and client.fetch(user, []).user["user_clicks_all"] < 200:
            time.sleep(0.1)
        time.sleep(0.3)
        u = client.fetch(user, [item])
        assert u.user["user_clicks_all"] == 200 and u.user["user_clicks_7d"] == 200
        assert u.items[0, RANKER_FEATURES.index("item_clicks_all")] == 200
        assert sum(c.stats.applied for c in consumers) == 200
        assert len(read_log(cfg.log_path).records) == 0, "no archive configured for these consumers"
    finally:
        for c in consumers:
            c.stop()
        delete_project_keys(cfg)


def test_entries_of_a_crashed_consumer_are_reclaimed_and_applied_once(ingest_cfg, small_dataset, tmp_path):
    import redis

    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import GROUP, StreamConfig, StreamConsumer

    cfg = _project_cfg(ingest_cfg, tmp_path)
    user, item = 700_000_002, int(small_dataset.items.item_id.iloc[1])
    survivor = StreamConsumer(cfg, name="survivor", stream_cfg=StreamConfig(reclaim_idle_ms=200, block_ms=50))
    try:
        survivor.ensure_group()
        EventIngestor(cfg).accept([{"user_id": user, "item_id": item, "event_type": "click"}] * 5)
        r = redis.Redis(**cfg.redis_kwargs())
        taken = r.xreadgroup(GROUP, "crashed", {survivor.keys.stream: ">"}, count=100)  # read, then "died"
        assert len(taken[0][1]) == 5
        assert survivor.poll_once(block_ms=1) == 0, "not idle long enough to take over yet"
        time.sleep(0.3)
        survivor._last_reclaim = 0.0
        assert survivor.poll_once(block_ms=1) == 5 and survivor.stats.reclaimed == 5
        assert survivor.backlog() == 0
        # a late duplicate apply of the same entries (a reply lost in a stall, then retried) changes nothing
        entries = [(sid.decode(), json.loads(f[b"e"])) for sid, f in taken[0][1]]
        assert survivor._apply(entries) == 0
        assert OnlineFeatureClient(cfg).fetch(user, []).user["user_clicks_all"] == 5
    finally:
        survivor.stop()
        delete_project_keys(cfg)


def test_a_lost_apply_reply_still_archives_the_batch(ingest_cfg, small_dataset, tmp_path):
    """The apply script acknowledges entries inside Redis; if its reply is lost (socket timeout in a stall)
    the entries are no longer pending and are never handed out again.  The archive must already hold them."""
    import redis

    from recsys.features.event_log import EventLog
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = _project_cfg(ingest_cfg, tmp_path)
    user, item = 700_000_003, int(small_dataset.items.item_id.iloc[2])
    archive = EventLog(tmp_path / "archive.jsonl")
    consumer = StreamConsumer(cfg, name="lossy", stream_cfg=StreamConfig(block_ms=1), archive=archive)
    real_script = consumer.applier._batch

    def reply_lost(*args, **kwargs):  # the script runs in Redis; only the reply goes missing
        real_script(*args, **kwargs)
        raise redis.exceptions.TimeoutError("reply lost")

    try:
        consumer.ensure_group()
        ids = {EventIngestor(cfg).accept([{"user_id": user, "item_id": item, "event_type": "click"}]).event_id
               for _ in range(4)}
        consumer.applier._batch = reply_lost
        with pytest.raises(redis.exceptions.TimeoutError):
            consumer.poll_once(block_ms=1)
        consumer.applier._batch = real_script
        assert consumer.backlog() == 0, "the script acknowledged the entries before its reply was lost"
        assert OnlineFeatureClient(cfg).fetch(user, []).user["user_clicks_all"] == 4
        assert {r["event_id"] for r in archive.read().records} == ids
    finally:
        consumer.stop()
        delete_project_keys(cfg)


def test_read_log_unique_key_drops_repeated_records(tmp_path):
    from recsys.features.event_log import EventLog

    log = EventLog(tmp_path / "a.jsonl", fsync=False)
    log.append([{"event_id": "a", "n": 1}, {"event_id": "b", "n": 2}])
    log.append([{"event_id": "a", "n": 1}, {"n": 3}, {"n": 4}])  # a retried batch; records without the key stay
    assert [r["n"] for r in read_log(log.path, unique_key="event_id").records] == [1, 2, 3, 4]
    assert len(read_log(log.path).records) == 5


# ------------------------------------------------------------------ outages
def _private_redis(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "recsys_tests_hardening_helpers", Path(__file__).resolve().parents[1] / "hardening" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    proc = mod.RedisProcess(mod.free_port(), tmp_path)
    proc.start()
    return proc


def test_redis_stall_delays_but_never_drops_accepted_events(tmp_path, small_dataset):
    """Events acknowledged before a stall are applied within 2 s after Redis returns; during the stall
    appends fail fast (-> HTTP 503 + Retry-After) and nothing half-written is left behind."""
    from recsys.features.ingest import EventIngestor
    from recsys.features.stream import EventLogUnavailable, StreamConfig, StreamConsumer

    rp = _private_redis(tmp_path)
    try:
        cfg = FeatureStoreConfig(repo_dir=tmp_path / "repo", redis_url=rp.url, project="stall",
                                 event_log_path=tmp_path / "events.jsonl")
        ingestor = EventIngestor(cfg, StreamConfig(append_timeout_s=0.5))
        consumer = StreamConsumer(cfg, name="replica-0", stream_cfg=StreamConfig(block_ms=100, retry_max_s=0.5),
                                  archive=ingestor_log(cfg))
        consumer.ensure_group()
        user = 123_456_789
        rp.proc.send_signal(signal.SIGSTOP)  # Redis stalls: the consumer's next calls time out
        try:
            consumer.start()
            time.sleep(0.2)
            t0 = time.perf_counter()
            with pytest.raises(EventLogUnavailable) as err:
                ingestor.accept([{"user_id": user, "item_id": 1, "event_type": "click"}])
            assert time.perf_counter() - t0 < 3 and "redis://" not in str(err.value)
        finally:
            rp.proc.send_signal(signal.SIGCONT)
        # the first append may have reached Redis after all (its reply was lost): count what the stream holds
        accepted = [ingestor.accept([{"user_id": user, "item_id": i, "event_type": "click"}]) for i in range(2, 12)]
        rp.proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # stalled while the consumer holds 10 acknowledged events
        rp.proc.send_signal(signal.SIGCONT)
        back = time.perf_counter()
        client = OnlineFeatureClient(cfg)
        expected = consumer.redis.xlen(consumer.keys.stream)
        while time.perf_counter() - back < 2.0 and client.fetch(user, []).user["user_clicks_all"] < expected:
            time.sleep(0.05)
        f = client.fetch(user, [])
        assert f.user["user_clicks_all"] == expected >= 10, (f.user["user_clicks_all"], expected)
        assert {r.records[0]["item_id"] for r in accepted} <= set(f.recent_item_ids)
        consumer.stop()
        archived = read_log(cfg.log_path, unique_key="event_id").records
        assert len(archived) == expected, "every event in the stream reaches the archive"
    finally:
        rp.proc.send_signal(signal.SIGCONT)
        rp.stop()


def ingestor_log(cfg):
    from recsys.features.event_log import EventLog

    return EventLog(cfg.log_path)


def test_unwritable_log_refuses_the_event(ingest_cfg, small_dataset, tmp_path):
    """Redis down: nothing is accepted (the API answers 503 + Retry-After), and the error names no URL."""
    from recsys.features.stream import EventLogUnavailable

    cfg = FeatureStoreConfig(**{**ingest_cfg.model_dump(), "event_log_path": tmp_path / "ev.jsonl",
                                "redis_url": "redis://:hunter2@127.0.0.1:1/15"})
    user, item = _known(small_dataset)
    t0 = time.perf_counter()
    with pytest.raises(EventLogUnavailable) as err:
        ingest_event(cfg, {"user_id": user, "item_id": item, "event_type": "view", "timestamp": _now_iso()})
    assert time.perf_counter() - t0 < 5
    assert "hunter2" not in str(err.value) and "redis://" not in str(err.value)
    assert not cfg.log_path.exists()


def test_a_retried_client_event_id_counts_once(ingest_cfg, small_dataset):
    user, item = 700_000_003 + uuid.uuid4().int % 10**6, int(small_dataset.items.item_id.iloc[2])
    ev = {"user_id": user, "item_id": item, "event_type": "purchase", "event_id": f"client-{uuid.uuid4().hex}"}
    assert ingest_event(ingest_cfg, ev).pushed and ingest_event(ingest_cfg, ev).pushed  # e.g. a retry after a 503
    assert OnlineFeatureClient(ingest_cfg).fetch(user, []).user["user_purchases_all"] == 1


def test_applied_events_mark_their_items_as_touched(ingest_cfg, small_dataset):
    """The apply script records each event's item with the Redis time it was applied, so readers that hold
    item rows in memory (serving's snapshot) can re-read exactly those, a bounded number per call."""
    user = int(small_dataset.users.user_id.iloc[7])
    items = [int(i) for i in small_dataset.items.item_id.iloc[7:10]]
    client = OnlineFeatureClient(ingest_cfg)
    none, cursor = client.touched_items_since(None)
    assert none == [] and cursor > 1.7e12  # the Redis server's clock, in ms
    view = {"user_id": user, "event_type": "view"}
    assert ingest_event(ingest_cfg, {**view, "item_id": items[0], "timestamp": _now_iso()}).pushed
    time.sleep(0.003)
    # one apply batch stamps its items with one Redis time: items 1 and 2 share a millisecond, after item 0's
    assert ingest_events(ingest_cfg, [{**view, "item_id": i, "timestamp": _now_iso()} for i in items[1:]]).pushed
    touched_key = client.overlay.touched
    stamps = [client.redis.zscore(touched_key, str(i)) for i in items]
    assert stamps[0] < stamps[1] == stamps[2], stamps  # the case where a cursor can drop items
    touched, later = client.touched_items_since(cursor)
    assert set(items) <= set(touched) and later >= cursor
    assert client.touched_items_since(later + 3_600_000)[0] == []  # a cursor after the events: nothing
    seen: list[int] = []
    c = cursor
    for _ in range(10):  # two at a time: the cursor walks through the set without losing any
        part, c = client.touched_items_since(c, limit=2)
        assert len(part) <= 2, part  # the per-poll limit
        seen += part
        if len(part) < 2:
            break
    # the first poll ends inside the shared millisecond (item 0, item 1): the next must still return item 2
    assert set(items) <= set(seen), (items, seen)
