"""LoopBatchedRedis against the real Redis: one pipeline per event-loop turn, each caller its own reply."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from recsys.platform.redis_async import LoopBatchedRedis, LoopBoundRedis


def _batched(url: str, timeout: float = 2.0) -> LoopBatchedRedis:
    return LoopBatchedRedis(LoopBoundRedis(url, socket_connect_timeout=timeout, socket_timeout=timeout))


def test_commands_of_one_turn_share_one_pipeline_and_each_caller_gets_its_reply(redis_url):
    b = _batched(redis_url)
    prefix = f"test:batch:{uuid.uuid4().hex}"

    async def run():
        keys = [f"{prefix}:{i}" for i in range(20)]
        acks = await asyncio.gather(*(b.execute("SET", k, f"v{i}", "PX", 60_000) for i, k in enumerate(keys)))
        assert (b.pipelines, b.commands) == (1, 20)  # 20 callers, one round trip
        assert all(acks)
        pairs = await asyncio.gather(*(b.execute("MGET", keys[i], keys[19 - i]) for i in range(20)))
        assert pairs == [[f"v{i}".encode(), f"v{19 - i}".encode()] for i in range(20)]
        assert (b.pipelines, b.commands) == (2, 40)
        for k in keys[:3]:  # one after another: nobody waits for company, one pipeline each
            assert await b.execute("GET", k) is not None
        assert (b.pipelines, b.commands) == (5, 43)
        await b.client.aclose()

    asyncio.run(run())


def test_an_error_reply_fails_only_its_own_caller(redis_url):
    b = _batched(redis_url)
    key = f"test:batch:{uuid.uuid4().hex}"

    async def run():
        results = await asyncio.gather(b.execute("SET", key, "not a number", "PX", 60_000), b.execute("INCR", key),
                                       b.execute("GET", key), return_exceptions=True)
        assert results[0] is True and results[2] == b"not a number"
        assert isinstance(results[1], Exception) and "not an integer" in str(results[1])
        assert b.pipelines == 1
        await b.client.aclose()

    asyncio.run(run())


def test_a_dead_server_raises_in_every_caller():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = _batched(f"redis://127.0.0.1:{port}/15", timeout=0.5)

    async def run():
        results = await asyncio.gather(*(b.execute("GET", f"k{i}") for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results

    asyncio.run(run())


def test_each_event_loop_gets_its_own_queue(redis_url):
    """Tests and CLIs run several loops in one process (``asyncio.run`` per call): nothing leaks across them."""
    b = _batched(redis_url)
    key = f"test:batch:{uuid.uuid4().hex}"
    for i in range(3):
        assert asyncio.run(b.execute("SET", key, str(i), "PX", 60_000)) is True
    assert asyncio.run(b.execute("GET", key)) == b"2"
    assert b.pipelines == 4


@pytest.mark.parametrize("n", [1, 300])
def test_batches_are_capped(redis_url, n):
    b = LoopBatchedRedis(LoopBoundRedis(redis_url), max_batch=128)

    async def run():
        replies = await asyncio.gather(*(b.execute("PING") for _ in range(n)))
        assert all(r is True for r in replies)
        assert b.pipelines == -(-n // 128) and b.commands == n

    asyncio.run(run())


def test_execute_many_sends_one_callers_commands_with_the_others_and_raises_its_first_error(redis_url):
    """The feature client's user read: one caller's commands, in order, in the turn's one pipeline."""
    b = _batched(redis_url)
    key = f"test:batch:{uuid.uuid4().hex}"

    async def run():
        many, one = await asyncio.gather(
            b.execute_many([("SET", key, "1", "PX", 60_000), ("INCR", key), ("HGETALL", f"{key}:none"),
                            ("LRANGE", f"{key}:none", 0, -1), ("GET", key)]),
            b.execute("GET", f"{key}:none"))
        assert many == [True, 2, {}, [], b"2"] and one is None  # parsed as the pipeline methods parse them
        assert (b.pipelines, b.commands) == (1, 6)
        with pytest.raises(Exception, match="not an integer"):
            await b.execute_many([("SET", key, "x", "PX", 60_000), ("INCR", key), ("GET", key)])
        assert await b.execute("GET", key) == b"x"  # the commands around the error still ran
        assert await b.execute_many([]) == [] and b.pipelines == 3  # nothing to send: no round trip
        await b.client.aclose()

    asyncio.run(run())


def test_a_callers_commands_are_never_split_across_pipelines(redis_url):
    b = LoopBatchedRedis(LoopBoundRedis(redis_url), max_batch=4)

    async def run():
        groups = await asyncio.gather(*(b.execute_many([("PING",)] * 3) for _ in range(3)))
        assert groups == [[True] * 3] * 3
        assert (b.pipelines, b.commands) == (3, 9)  # 3 + 3 > 4: each caller's three in a pipeline of their own
        await b.client.aclose()

    asyncio.run(run())
