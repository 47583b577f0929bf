"""No stream entry can stop the consumer: poison entries and unknown event types are dead-lettered, the
batch goes on, and an acknowledged event always ends in an invalidated result cache.

Real Redis (own Feast project per test); entries that no validating writer would produce are written
with a raw XADD, as an old or buggy producer (or a rolling upgrade) would.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from recsys.features import FeatureStoreConfig


def _cfg(ingest_cfg, tmp_path) -> FeatureStoreConfig:
    return FeatureStoreConfig(**{**ingest_cfg.model_dump(), "project": f"recsys_t{uuid.uuid4().hex[:8]}",
                                 "event_log_path": tmp_path / "events.jsonl"})


def _good(user: int, item: int) -> dict:
    return {"event_id": uuid.uuid4().hex, "user_id": user, "item_id": item, "event_type": "click",
            "timestamp": "2026-01-01T00:00:00Z", "ts": time.time(), "rating": None}


def _clicks(r, consumer, user: int) -> int:
    return int(r.hget(consumer.keys.user(user), "c:clicks:all") or 0)


@pytest.fixture
def project(ingest_cfg, tmp_path):
    from recsys.features.online import delete_project_keys

    cfg = _cfg(ingest_cfg, tmp_path)
    yield cfg
    delete_project_keys(cfg)


@pytest.mark.parametrize("blob,error", [
    ("[1, 2, 3]", "not a JSON object"),
    ("{not json", "not JSON"),
    (json.dumps({"user_id": 1, "item_id": "x", "event_type": "click", "ts": 1.0}), "item_id"),
])
def test_a_poison_entry_is_dead_lettered_and_the_batch_goes_on(project, small_dataset, blob, error):
    from recsys.features.stream import StreamConfig, StreamConsumer

    item = int(small_dataset.items.item_id.iloc[0])
    consumer = StreamConsumer(project, name="c0", stream_cfg=StreamConfig(block_ms=10, retry_max_s=0.05))
    r = redis.Redis(**project.redis_kwargs())
    try:
        consumer.ensure_group()
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_001, item))})
        poison = r.xadd(consumer.keys.stream, {"e": blob}).decode()
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_001, item))})
        assert consumer.drain(5.0), "the consumer is stuck behind the poison entry"
        assert _clicks(r, consumer, 800_000_001) == 2, "both good events around the poison entry are applied"
        from recsys.features.dead_letters import DeadLetters

        letters = DeadLetters(project).list()
        assert [d.source_id for d in letters] == [poison]
        assert error in letters[0].error and letters[0].payload == blob
        assert consumer.backlog() == 0
    finally:
        consumer.stop()


def test_an_unknown_event_type_never_blocks_and_is_kept_for_replay(project, small_dataset):
    from recsys.features.dead_letters import DeadLetters
    from recsys.features.stream import StreamConfig, StreamConsumer

    item = int(small_dataset.items.item_id.iloc[0])
    consumer = StreamConsumer(project, name="c0", stream_cfg=StreamConfig(block_ms=10, retry_max_s=0.05))
    r = redis.Redis(**project.redis_kwargs())
    try:
        consumer.ensure_group()
        future = {**_good(800_000_002, item), "event_type": "share"}  # a newer producer's type
        r.xadd(consumer.keys.stream, {"e": json.dumps(future)})
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_002, item))})
        assert consumer.drain(5.0), "an unknown event type stopped the consumer"
        assert _clicks(r, consumer, 800_000_002) == 1
        letters = DeadLetters(project).list()
        assert len(letters) == 1 and "event_type" in letters[0].error and "share" in letters[0].error
        assert json.loads(letters[0].payload)["event_id"] == future["event_id"], "kept verbatim for a replay"
    finally:
        consumer.stop()


def test_a_failed_invalidation_is_retried_until_it_succeeds(project, small_dataset):
    """The cache lives on another Redis that fails once: the event must still end in an invalidation."""
    from recsys.features.stream import StreamConfig, StreamConsumer

    item = int(small_dataset.items.item_id.iloc[0])
    invalidated: list[int] = []
    calls = {"n": 0}

    def flaky(records: list[dict]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("cache Redis unreachable")
        invalidated.extend(int(r["user_id"]) for r in records)

    consumer = StreamConsumer(project, name="c0", on_applied=flaky,
                              stream_cfg=StreamConfig(block_ms=10, retry_initial_s=0.01, retry_max_s=0.05))
    r = redis.Redis(**project.redis_kwargs())
    try:
        consumer.ensure_group()
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_003, item))})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and 800_000_003 not in invalidated:
            consumer.drain(0.5)
        assert calls["n"] >= 2, "the failed invalidation was never retried"
        assert 800_000_003 in invalidated, "an acknowledged event left the user's cached answers valid"
        assert _clicks(r, consumer, 800_000_003) == 1, "applied once despite the retry"
    finally:
        consumer.stop()


def test_dlq_cli_lists_shows_replays_and_drops(project, small_dataset):
    from click.testing import CliRunner

    from recsys.features.dead_letters import DeadLetters
    from recsys.features.stream import StreamConfig, StreamConsumer
    from recsys.platform.cli import root

    consumer = StreamConsumer(project, name="c0", stream_cfg=StreamConfig(block_ms=10))
    r = redis.Redis(**project.redis_kwargs())
    target = ["--redis-url", project.redis_url, "--project", project.project]

    def run(*args):
        return CliRunner().invoke(root, ["events", "dlq", *args, *target])

    try:
        consumer.ensure_group()
        for blob in ("[1]", "[2]", "[3]"):
            r.xadd(consumer.keys.stream, {"e": blob})
        assert consumer.drain(5.0)
        letters = DeadLetters(project).list()
        assert len(letters) == 3
        res = run("list")
        assert res.exit_code == 0 and "3 dead letter(s)" in res.output and letters[0].id in res.output
        res = run("show", letters[0].id)
        assert res.exit_code == 0 and json.loads(res.output)["payload"] == "[1]"
        assert run("show", "1-1").exit_code == 4
        assert run("show", "not-an-id").exit_code == 2
        before = r.xlen(consumer.keys.stream)
        res = run("replay", letters[0].id)
        assert res.exit_code == 0 and "replayed 1" in res.output
        assert r.xlen(consumer.keys.stream) == before + 1 and DeadLetters(project).count() == 2
        assert run("replay").exit_code == 2, "neither ids nor --all"
        res = run("drop", letters[1].id)
        assert res.exit_code == 2 and "--yes" in res.output and DeadLetters(project).count() == 2
        assert run("drop", letters[1].id, "--yes").exit_code == 0 and DeadLetters(project).count() == 1
        assert run("drop", letters[1].id, "--yes").exit_code == 4, "already dropped"
        res = CliRunner().invoke(root, ["events", "dlq", "list", "--redis-url", "redis://127.0.0.1:1/0"])
        assert res.exit_code == 3 and "Redis unreachable" in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
    finally:
        consumer.stop()


def test_an_entry_that_keeps_failing_is_dead_lettered_after_max_deliveries(project, small_dataset):
    """A valid-looking entry whose apply raises (here: the genre lookup fails for its item) is retried,
    then dead-lettered after ``max_deliveries``; the good entries of the same batch are applied at once."""
    from recsys.features.dead_letters import DeadLetters
    from recsys.features.stream import StreamConfig, StreamConsumer

    item = int(small_dataset.items.item_id.iloc[0])
    consumer = StreamConsumer(project, name="c0", stream_cfg=StreamConfig(block_ms=10, max_deliveries=3))
    real = consumer.applier._item_genres

    def genres(items):
        if 999_999 in items:
            raise ValueError("item 999999 breaks the genre lookup")
        return real(items)

    consumer.applier._item_genres = genres
    r = redis.Redis(**project.redis_kwargs())
    try:
        consumer.ensure_group()
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_004, item))})
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_004, 999_999))})
        r.xadd(consumer.keys.stream, {"e": json.dumps(_good(800_000_004, item))})
        assert consumer.poll_once(block_ms=1) == 3
        assert _clicks(r, consumer, 800_000_004) == 2, "the good entries did not wait for the bad one"
        assert DeadLetters(project).count() == 0, "dead-lettered before max_deliveries"
        assert consumer.drain(5.0)
        letters = DeadLetters(project).list()
        assert len(letters) == 1 and letters[0].deliveries == 3 and "breaks the genre lookup" in letters[0].error
    finally:
        consumer.stop()
