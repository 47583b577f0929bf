"""Real-time path: pushed events show up in the very next online read; bad events write nothing."""

from __future__ import annotations

import json
import shutil
import time

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
    ({"user_id": 10**12, "item_id": 1, "event_type": "view", "timestamp": _now_iso()}, "user_id"),
    ({"user_id": 1, "item_id": 10**12, "event_type": "view", "timestamp": _now_iso()}, "item_id"),
    ({"user_id": 1, "item_id": 1, "event_type": "like", "timestamp": _now_iso()}, "event_type"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": "yesterday-ish"}, "timestamp"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": _now_iso(86400)}, "timestamp"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": "1999-01-01T00:00:00Z"}, "timestamp"),
    ({"user_id": 1, "item_id": 1, "event_type": "rating", "rating": 7, "timestamp": _now_iso()}, "rating"),
    ({"user_id": 1, "item_id": 1, "event_type": "rating", "timestamp": _now_iso()}, "rating"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "rating": 3, "timestamp": _now_iso()}, "rating"),
    ({"user_id": 1, "item_id": 1, "event_type": "view", "timestamp": _now_iso(), "colour": "red"}, "colour"),
    ({"user_id": 1, "item_id": 1, "event_type": "view"}, "timestamp"),
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


def test_redis_down_event_is_logged_not_pushed(ingest_cfg, small_dataset, tmp_path):
    """The log is the source of truth: with Redis down the event is kept and the caller is told."""
    repo = tmp_path / "repo"
    shutil.copytree(ingest_cfg.repo_dir, repo)
    cfg = FeatureStoreConfig(**{**ingest_cfg.model_dump(), "repo_dir": repo, "event_log_path": tmp_path / "ev.jsonl",
                                "redis_url": "redis://127.0.0.1:1/15"})
    user, item = _known(small_dataset)
    t0 = time.perf_counter()
    result = ingest_event(cfg, {"user_id": user, "item_id": item, "event_type": "view", "timestamp": _now_iso()})
    assert time.perf_counter() - t0 < 10  # includes creating the Feast store; the push itself fails fast
    assert not result.pushed and "unavailable" in result.online_error
    assert [r["event_id"] for r in read_log(cfg.log_path).records] == result.event_ids
