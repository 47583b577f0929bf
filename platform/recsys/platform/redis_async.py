"""``redis.asyncio`` clients for request paths, one per event loop.

Why not ``asyncio.to_thread(sync_client.call)``: on the serving hot path each thread hop costs
more CPU than the Redis command it wraps (queue hand-off, a wake-up, two GIL transfers; measured
~0.7 ms vs ~0.2 ms of CPU per request for the same three round trips, and far worse inside a Serve
replica whose other threads also want the GIL). The asyncio client stays on the request's loop.

A ``redis.asyncio`` connection belongs to the loop that opened it, and tests and CLIs run several
loops in one process (``asyncio.run`` per call), so :class:`LoopBoundRedis` keeps one client per
running loop. Like the synchronous clients here, it never retries (a dead Redis must surface
within the socket timeout, not after redis-py's 1-10 s back-off) and skips health-check PINGs.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any


class LoopBoundRedis:
    """``get()`` -> the ``redis.asyncio.Redis`` of the running event loop (created on first use)."""

    def __init__(self, url: str | None = None, **kwargs: Any):
        self._url = url
        self._kwargs = kwargs
        self._clients: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is not None and entry[0]() is loop:
            return entry[1]
        import redis.asyncio as aredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from recsys.platform.redis_connect import async_redis_from_url

        if self._url:  # a redis+cluster:// URL gives a RedisCluster client
            client = async_redis_from_url(self._url, **self._kwargs)
        else:
            client = aredis.Redis(**{"retry": Retry(NoBackoff(), 0), "health_check_interval": 0, **self._kwargs})
        # loops that are gone (tests, CLI calls) release their clients here
        self._clients = {k: v for k, v in self._clients.items() if v[0]() is not None}
        self._clients[id(loop)] = (weakref.ref(loop), client)
        return client

    async def aclose(self) -> None:
        """Close the clients (a replaced service must not keep its sockets): the running loop's one is
        awaited; a client of another loop cannot be awaited here and is dropped (its loop closes it)."""
        clients, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for ref, client in clients.values():
            if ref() is loop:
                await client.aclose()


class _Turn:
    """The commands queued in one event-loop turn of one loop."""

    __slots__ = ("queue", "scheduled", "sending")

    def __init__(self) -> None:
        self.queue: list[tuple[tuple[Any, ...], asyncio.Future]] = []
        self.scheduled = False
        self.sending: set[asyncio.Task] = set()  # strong references until each pipeline has answered


class LoopBatchedRedis:
    """``await execute(*command)``: the commands awaited during one event-loop turn go out as one pipeline.

    Why: on a busy serving replica each single command costs the client ~120 µs of CPU (connection
    checkout, a write, a read, futures), while the same command inside a pipeline of 4-8 costs 20-35 µs
    (measured with redis.asyncio on this box). Requests that reach the same Redis step in one loop turn
    (those a batched shard call released together, say) share one round trip; nothing waits on a timer,
    so at low load a command goes out one loop turn later than it would alone. Each caller still awaits
    its own reply (an error reply or a failed round trip raises in every caller of that pipeline), so
    the semantics are those of sending the command itself. Not for transactions or blocking commands.
    """

    def __init__(self, client: LoopBoundRedis, max_batch: int = 256):
        self.client = client
        self.max_batch = max_batch
        self.pipelines = 0  # pipelines sent (tests and benchmarks read it)
        self.commands = 0  # commands they carried
        self._turns: dict[int, tuple[weakref.ref, _Turn]] = {}

    def _turn(self, loop: asyncio.AbstractEventLoop) -> _Turn:
        entry = self._turns.get(id(loop))
        if entry is not None and entry[0]() is loop:
            return entry[1]
        turn = _Turn()
        self._turns = {k: v for k, v in self._turns.items() if v[0]() is not None}
        self._turns[id(loop)] = (weakref.ref(loop), turn)
        return turn

    async def execute(self, *command: Any) -> Any:
        """The reply to ``command`` (e.g. ``"MGET", k1, k2``), parsed as the client parses it."""
        loop = asyncio.get_running_loop()
        turn = self._turn(loop)
        future = loop.create_future()
        turn.queue.append((command, future))
        if not turn.scheduled:
            turn.scheduled = True
            loop.call_soon(self._flush, loop, turn)  # after everything already runnable in this turn
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop, turn: _Turn) -> None:
        turn.scheduled = False
        queued, turn.queue = turn.queue, []
        for start in range(0, len(queued), self.max_batch):
            task = loop.create_task(self._send(queued[start:start + self.max_batch]))
            turn.sending.add(task)
            task.add_done_callback(turn.sending.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future]]) -> None:
        self.pipelines += 1
        self.commands += len(batch)
        try:
            pipe = self.client.get().pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the round trip failed (or was cancelled): every caller sees it
            for _, future in batch:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else ConnectionError("pipeline cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
