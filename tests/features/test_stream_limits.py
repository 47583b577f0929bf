"""Bounded Redis state: a capped stream that refuses instead of losing, a full Redis that refuses cleanly,
TTLs on the overlay, dead consumer names removed, absurd ids rejected.

The out-of-memory test runs its own ``redis-server`` (tiny ``maxmemory``, ``noeviction``) on a free
port, never touching the shared server's config.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from recsys.features import EventValidationError, FeatureStoreConfig
from tests.private_redis import private_redis


@pytest.fixture
def tiny_redis(tmp_path):
    """A private redis-server with maxmemory 2mb and noeviction (what the Helm chart configures)."""
    with private_redis(tmp_path, "2mb") as server:
        yield server


def _event(user: int, item: int = 1) -> dict:
    return {"user_id": user, "item_id": item, "event_type": "click"}


def test_a_full_redis_refuses_the_append_with_a_retryable_error(tiny_redis, tmp_path):
    from recsys.features.ingest import EventIngestor
    from recsys.features.stream import EventLogUnavailable

    url, client = tiny_redis
    cfg = FeatureStoreConfig(repo_dir=tmp_path, redis_url=url, project="oom")
    ingestor = EventIngestor(cfg)
    assert ingestor.accept([_event(1)]).stream_ids, "accepted while there is room"
    i = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while True:  # fill Redis past maxmemory with small values (a large one is refused while it is in flight)
            client.set(f"filler:{i}", b"x" * 1000)
            i += 1
    length = client.xlen(ingestor.stream.keys.stream)
    with pytest.raises(EventLogUnavailable, match="out of memory"):  # the API maps this to 503 + Retry-After
        ingestor.accept([_event(2)] * 10)
    assert client.xlen(ingestor.stream.keys.stream) == length, "nothing half-written"
    assert ingestor.stream.refused_oom == 1


def test_the_stream_cap_drops_applied_entries_only_and_refuses_instead_of_losing(tmp_path, redis_url):
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import EventLogFull, StreamConfig, StreamConsumer

    cfg = FeatureStoreConfig(repo_dir=tmp_path, redis_url=redis_url, project=f"recsys_t{uuid.uuid4().hex[:8]}")
    scfg = StreamConfig(max_len=10, block_ms=10)
    ingestor = EventIngestor(cfg, scfg)
    consumer = StreamConsumer(cfg, name="c0", stream_cfg=scfg)
    r = redis.Redis(**cfg.redis_kwargs())
    try:
        consumer.ensure_group()
        ingestor.accept([_event(5)] * 8)
        assert consumer.drain(5.0)  # 8 applied entries, still kept (retention)
        ingestor.accept([_event(5)] * 6)  # 14 > cap: the applied ones make room
        assert r.xlen(consumer.keys.stream) <= 10
        ingestor.accept([_event(5)] * 4)  # 10 unapplied now
        with pytest.raises(EventLogFull, match="cap 10"):
            ingestor.accept([_event(5)])
        assert ingestor.stream.refused_full == 1
        from types import SimpleNamespace

        from prometheus_client import CollectorRegistry, generate_latest

        from recsys.serving.http.events import _EventStreamCollector

        registry = CollectorRegistry()  # what GET /metrics of the ingress shows
        registry.register(_EventStreamCollector(SimpleNamespace(ingestor=ingestor, consumer=consumer)))
        assert 'recsys_event_log_refused_total{reason="full"} 1.0' in generate_latest(registry).decode()
        assert consumer.drain(5.0)
        assert int(r.hget(consumer.keys.user(5), "c:clicks:all")) == 18, "every accepted event applied"
        ingestor.accept([_event(5)])  # room again once applied
    finally:
        consumer.stop()
        delete_project_keys(cfg)


def test_overlay_keys_expire_and_a_returning_user_is_cold(tmp_path, redis_url):
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = FeatureStoreConfig(repo_dir=tmp_path, redis_url=redis_url, project=f"recsys_t{uuid.uuid4().hex[:8]}",
                             online_user_ttl_s=2, online_item_ttl_s=3)
    consumer = StreamConsumer(cfg, name="c0", stream_cfg=StreamConfig(block_ms=10))
    r = redis.Redis(**cfg.redis_kwargs())
    k = consumer.keys
    try:
        consumer.ensure_group()
        EventIngestor(cfg).accept([_event(7, 70)])
        assert consumer.drain(5.0)
        for key, ttl in ((k.user(7), 2), (k.recent(7), 2), (k.seen_live(7), 2), (k.item(70), 3)):
            assert 0 < r.ttl(key) <= ttl, key
        time.sleep(3.2)
        assert not r.exists(k.user(7), k.recent(7), k.seen_live(7), k.item(70)), "expired: the user is cold again"
    finally:
        consumer.stop()
        delete_project_keys(cfg)


def test_dead_consumer_names_are_deleted(tmp_path, redis_url):
    from recsys.features.ingest import EventIngestor
    from recsys.features.keys import GROUP
    from recsys.features.online import delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = FeatureStoreConfig(repo_dir=tmp_path, redis_url=redis_url, project=f"recsys_t{uuid.uuid4().hex[:8]}")
    live = StreamConsumer(cfg, name="live", stream_cfg=StreamConfig(block_ms=10, dead_consumer_idle_ms=1000))
    r = redis.Redis(**cfg.redis_kwargs())
    try:
        live.ensure_group()
        EventIngestor(cfg).accept([_event(8)])
        r.xreadgroup(GROUP, "gone-with-pending", {live.keys.stream: ">"}, count=1)  # holds the entry
        r.xgroup_createconsumer(live.keys.stream, GROUP, "gone-idle")
        time.sleep(1.1)
        assert live.delete_dead_consumers() == 1, "only the idle one with nothing pending"
        names = {c["name"].decode() for c in r.xinfo_consumers(live.keys.stream, GROUP)}
        assert "gone-idle" not in names and "gone-with-pending" in names
    finally:
        live.stop()
        delete_project_keys(cfg)


@pytest.mark.parametrize("field,value", [("user_id", -1), ("item_id", 2**53), ("user_id", 2**62)])
def test_absurd_ids_are_rejected_naming_the_field(field, value):
    from recsys.features.ingest import validate_event

    event = {**_event(1), field: value}
    with pytest.raises(EventValidationError) as e:
        validate_event(event, max_id=2**53 - 1)
    assert e.value.field == field and "id range" in str(e.value)
    assert json.dumps(validate_event(_event(2**53 - 1), max_id=2**53 - 1))
