"""The real-time path on a real 3-master Redis Cluster: events, dead letters, invalidation queue, seen sets.

Every Lua script must name all its keys and keep them in one slot (the cluster refuses anything else
with CROSSSLOT / "Script attempted to access a non local key"), so running the consumer here is the test.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import numpy as np
import pytest
from redis.cluster import key_slot

from recsys.features import FeatureStoreConfig

pytestmark = pytest.mark.redis_cluster


@pytest.fixture
def cfg(redis_cluster_url, tmp_path):
    from recsys.features.online import delete_project_keys

    c = FeatureStoreConfig(repo_dir=tmp_path, redis_url=redis_cluster_url, project=f"c{uuid.uuid4().hex[:8]}")
    yield c
    delete_project_keys(c)


def _events(n_users: int = 12) -> list[dict]:
    out = []
    for u in range(n_users):  # users and items spread over all three masters' slots
        out += [{"user_id": 1000 + u, "item_id": 50 + u % 5, "event_type": "click"},
                {"user_id": 1000 + u, "item_id": 60 + u % 3, "event_type": "rating", "rating": 4.0}]
    return out


async def _fetch_together(client, users, items, at):
    return await asyncio.gather(*(client.fetch_async(u, items, at=at) for u in users))


def test_slots_differ_and_the_keys_of_one_user_share_one(cfg):
    from recsys.features.keys import OverlayKeys, cache_generation_key

    k = OverlayKeys(cfg.project)
    user_slots = {key_slot(x.encode()) for x in (k.user(7), k.recent(7), k.seen_live(7), k.seen_batch(7),
                                                 k.user_applied(7), k.event_marker(7, "e1"),
                                                 cache_generation_key("recsys:rc", 7))}
    assert len(user_slots) == 1
    assert key_slot(k.item(7).encode()) == key_slot(k.item_applied(7).encode())
    assert len({key_slot(x.encode()) for x in (k.stream, k.dead_letters, k.invalidations)}) == 1
    assert len({key_slot(k.user(u).encode()) for u in range(12)}) > 1


def test_events_are_applied_exactly_once_on_a_cluster(cfg):
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import OnlineFeatureClient
    from recsys.features.stream import StreamConfig, StreamConsumer

    consumer = StreamConsumer(cfg, name="c0", stream_cfg=StreamConfig(block_ms=10, batch=7))
    try:
        consumer.ensure_group()
        retried = {"user_id": 1000, "item_id": 50, "event_type": "click", "event_id": "client-1"}
        EventIngestor(cfg).accept([*_events(), retried, retried])  # the client event id counts once
        assert consumer.drain(60.0), consumer.stats
        r = consumer.redis
        assert int(r.hget(consumer.keys.user(1000), "c:clicks:all")) == 2
        assert int(r.hget(consumer.keys.user(1001), "c:ratings:all")) == 1
        assert int(r.hget(consumer.keys.item(50), "c:clicks:all")) == 4  # users 1000, 1005, 1010 + retried
        assert r.get(consumer.keys.seen_live(1001)) == b"51,61,"
        assert 0 < r.ttl(consumer.keys.user(1001)) <= cfg.online_user_ttl_s
        client = OnlineFeatureClient(cfg)
        feats = client.fetch(1001, [51, 61])
        assert feats.user["user_clicks_all"] == 1 and feats.user["user_ratings_all"] == 1
        # serving's path: concurrent requests' reads share one pipeline whose keys span the masters
        users, at = (1000, 1001, 1002, 1007), 1.8e9
        batched = asyncio.run(_fetch_together(client, users, [51, 61], at))
        assert client._abatched.pipelines == 1 and len({key_slot(client.layout.key("user_id", u))
                                                         for u in users}) > 1
        for u, got in zip(users, batched, strict=True):
            want = client.fetch(u, [51, 61], at=at)
            assert got.user == want.user and got.recent_item_ids == want.recent_item_ids
            np.testing.assert_array_equal(got.items, want.items)
            np.testing.assert_array_equal(got.seen_item_ids, want.seen_item_ids)
        # a re-delivery of applied entries (a lost reply, a reclaim) changes nothing
        entries = [(sid.decode(), json.loads(f[b"e"])) for sid, f in r.xrange(consumer.keys.stream)]
        assert consumer._apply(entries) == 0
        assert int(r.hget(consumer.keys.item(50), "c:clicks:all")) == 4
    finally:
        consumer.stop()


def test_dead_letters_and_the_invalidation_queue_on_a_cluster(cfg):
    from recsys.features.dead_letters import DeadLetters
    from recsys.features.ingest import EventIngestor
    from recsys.features.stream import StreamConfig, StreamConsumer

    calls: list[int] = []

    def flaky(records):
        calls.append(len(records))
        if len(calls) == 1:
            raise ConnectionError("cache down")

    consumer = StreamConsumer(cfg, name="c0", on_applied=flaky, stream_cfg=StreamConfig(block_ms=10))
    try:
        consumer.ensure_group()
        consumer.redis.xadd(consumer.keys.stream, {"e": "[1, 2]"})
        EventIngestor(cfg).accept(_events(3))
        assert consumer.drain(60.0)
        letters = DeadLetters(cfg).list()
        assert len(letters) == 1 and "not a JSON object" in letters[0].error
        assert len(calls) >= 2 and consumer.pending_invalidations() == 0
        assert DeadLetters(cfg).replay([letters[0].id])[letters[0].id]
        assert consumer.drain(60.0) and DeadLetters(cfg).count() == 1  # replayed, dead-lettered again
    finally:
        consumer.stop()


def test_linucb_state_and_the_result_cache_on_a_cluster(cfg, redis_cluster_url):
    """Serving's Redis users on the cluster: LinUCB's scripts (state + pending in one slot) and the result cache,
    invalidated by the event consumer's script bumping the generation key in the user's slot."""
    import numpy as np

    from recsys.features.ingest import EventIngestor
    from recsys.features.stream import StreamConfig, StreamConsumer
    from recsys.serving.pipeline.cache.result_cache import CacheConfig, ResultCache
    from recsys.serving.pipeline.exploration.linucb import LinUCB, LinUCBConfig

    model = LinUCB(redis_cluster_url, LinUCBConfig(key=f"test:linucb:{uuid.uuid4().hex}", content_dims=2))
    x = np.ones(model.d)
    model.record_impression(7, 70, x)
    assert model.record_reward(7, 70, 1.0) and not model.record_reward(7, 70, 1.0), "rewarded once"
    model.refresh(force=True)
    assert model.impressions == 1
    model.reset()

    prefix = f"test:rc:{uuid.uuid4().hex[:8]}"
    cache = ResultCache(CacheConfig(enabled=True, ttl_s=60, key_prefix=prefix), redis_cluster_url)
    lookup = cache.get(1003, "v", "h")
    assert cache.put(1003, "v", "h", lookup.generation, {"items": [1, 2]})
    assert cache.get(1003, "v", "h").payload == {"items": [1, 2]}
    consumer = StreamConsumer(cfg, name="c0", invalidate_prefix=prefix, stream_cfg=StreamConfig(block_ms=10))
    try:
        consumer.ensure_group()
        EventIngestor(cfg).accept([{"user_id": 1003, "item_id": 5, "event_type": "click"}])
        assert consumer.drain(60.0)
        assert cache.get(1003, "v", "h").payload is None, "the applied event invalidated the cached answer"
    finally:
        consumer.stop()
        cache.close()


def test_feast_materialize_and_seen_sets_on_a_cluster(small_dataset, redis_cluster_url, tmp_path):
    """Feast (redis_type: redis_cluster) materializes into the cluster; OnlineFeatureClient reads the rows,
    the seen sets written by materialize and the live seen set appended by the consumer."""
    from recsys.features import apply, build_offline_features, materialize
    from recsys.features.ingest import EventIngestor
    from recsys.features.online import OnlineFeatureClient, delete_project_keys
    from recsys.features.stream import StreamConfig, StreamConsumer

    cfg = FeatureStoreConfig(repo_dir=tmp_path / "repo", redis_url=redis_cluster_url,
                             project=f"c{uuid.uuid4().hex[:8]}", event_log_path=tmp_path / "events.jsonl")
    consumer = None
    try:
        build_offline_features(small_dataset, cfg, progress=False)
        apply(cfg)
        assert "redis_type: redis_cluster" in (cfg.repo_dir / "feature_store.yaml").read_text()
        stats = materialize(cfg, progress=False)
        assert stats.rows > 0 and stats.seen_users > 0
        ev = small_dataset.events
        user = int(ev.user_id.iloc[0])
        client = OnlineFeatureClient(cfg)
        feats = client.fetch(user, [int(small_dataset.items.item_id.iloc[0])])
        assert not feats.user_missing and not feats.missing[0], "Feast rows read back from the cluster"
        before = feats.user["user_clicks_all"]
        consumer = StreamConsumer(cfg, name="c0", stream_cfg=StreamConfig(block_ms=10))
        consumer.ensure_group()
        new_item = 9_999_001
        EventIngestor(cfg).accept([{"user_id": user, "item_id": new_item, "event_type": "click"}])
        assert consumer.drain(60.0)
        after = client.fetch(user, [])
        assert after.user["user_clicks_all"] == before + 1
        seen_batch = consumer.redis.get(consumer.keys.seen_batch(user))
        assert seen_batch, "materialize wrote the user's seen set on the cluster"
        assert consumer.redis.get(consumer.keys.seen_live(user)) == f"{new_item},".encode()
    finally:
        if consumer is not None:
            consumer.stop()
        delete_project_keys(cfg)


def test_a_batch_costs_a_round_trip_per_node_not_per_entity(cfg, monkeypatch):
    """The per-user and per-item scripts of a batch go through one cluster pipeline per phase: the number of
    round trips (packed sends on any connection) is bounded by the nodes, not by the 24 users and 8 items."""
    import redis

    from recsys.features.ingest import EventIngestor
    from recsys.features.stream import StreamConfig, StreamConsumer
    from recsys.features.stream_entries import parse_entry

    consumer = StreamConsumer(cfg, name="c0", stream_cfg=StreamConfig(block_ms=10, batch=1000))
    try:
        consumer.ensure_group()
        EventIngestor(cfg).accept(_events(24))  # warm-up: scripts loaded, item genres cached
        assert consumer.drain(60.0)
        EventIngestor(cfg).accept([{**e, "user_id": e["user_id"] + 100} for e in _events(24)])
        got = consumer.redis.xreadgroup("online", "c0", {consumer.keys.stream: ">"}, count=1000)
        entries = [(sid.decode(), parse_entry(f, cfg.max_entity_id)) for sid, f in got[0][1]]
        sends: list[int] = []
        real = redis.connection.AbstractConnection.send_packed_command

        def counted(self, command, check_health=True):
            sends.append(repr(command)[:150])
            return real(self, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
        assert consumer._apply(entries) == 48
        monkeypatch.undo()
        # 2 pipelined phases x 3 nodes + TIME + the touched-items pipeline + the XACK script
        assert len(sends) <= 9, f"{len(sends)} round trips for 24 users and 8 items"
        assert int(consumer.redis.hget(consumer.keys.user(1105), "c:clicks:all")) == 1
        assert consumer.backlog() == 0
    finally:
        consumer.stop()
