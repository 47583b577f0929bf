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


class _PerLoop:
    """One value per event loop, created on first use in that loop; a loop that is gone drops its value.

    Keyed by ``id(loop)`` with a weak reference to check it: a new loop may reuse a dead loop's id.
    """

    def __init__(self) -> None:
        self._values: dict[int, tuple[weakref.ref, Any]] = {}

    def get(self, loop: asyncio.AbstractEventLoop, make: Any) -> Any:
        entry = self._values.get(id(loop))
        if entry is not None and entry[0]() is loop:
            return entry[1]
        value = make()
        # loops that are gone (tests, CLI calls) release their values here
        self._values = {k: v for k, v in self._values.items() if v[0]() is not None}
        self._values[id(loop)] = (weakref.ref(loop), value)
        return value

    def pop_all(self) -> list[tuple[asyncio.AbstractEventLoop | None, Any]]:
        """Every (loop or None when gone, value), forgetting them."""
        values, self._values = self._values, {}
        return [(ref(), value) for ref, value in values.values()]


class LoopBoundRedis:
    """``get()`` -> the ``redis.asyncio.Redis`` of the running event loop (created on first use)."""

    def __init__(self, url: str | None = None, **kwargs: Any):
        self._url = url
        self._kwargs = kwargs
        self._clients = _PerLoop()

    def get(self) -> Any:
        return self._clients.get(asyncio.get_running_loop(), self._connect)

    def _connect(self) -> Any:
        import redis.asyncio as aredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from recsys.platform.redis_connect import async_redis_from_url

        if self._url:  # a redis+cluster:// URL gives a RedisCluster client
            return async_redis_from_url(self._url, **self._kwargs)
        return aredis.Redis(**{"retry": Retry(NoBackoff(), 0), "health_check_interval": 0, **self._kwargs})

    async def aclose(self) -> None:
        """Close the clients (a replaced service must not keep its sockets): the running loop's one is
        awaited; a client of another loop cannot be awaited here and is dropped (its loop closes it)."""
        loop = asyncio.get_running_loop()
        for owner, client in self._clients.pop_all():
            if owner is loop:
                await client.aclose()


class _Turn:
    """The callers queued in one event-loop turn of one loop: (their commands, their future, one command?)."""

    __slots__ = ("queue", "scheduled", "sending")

    def __init__(self) -> None:
        self.queue: list[tuple[list[tuple[Any, ...]], asyncio.Future, bool]] = []
        self.scheduled = False
        self.sending: set[asyncio.Task] = set()  # strong references until each pipeline has answered


class LoopBatchedRedis:
    """``await execute(*command)`` / ``await execute_many(commands)``: the commands awaited during one
    event-loop turn go out as one pipeline.

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
        self.max_batch = max_batch  # commands per pipeline (one caller's commands are never split)
        self.pipelines = 0  # pipelines sent (tests and benchmarks read it)
        self.commands = 0  # commands they carried
        self._turns = _PerLoop()

    async def execute(self, *command: Any) -> Any:
        """The reply to ``command`` (e.g. ``"MGET", k1, k2``), parsed as the client parses it."""
        return await self._queue([command], True)

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The replies to ``commands``, sent together (in order, in this turn's pipeline).

        Like a pipeline's ``execute()``: the first error reply (or a failed round trip) raises. The commands
        are not a transaction.
        """
        return await self._queue(list(commands), False) if commands else []

    def _queue(self, commands: list[tuple[Any, ...]], single: bool) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop, _Turn)
        future = loop.create_future()  # one per caller, however many commands it sends
        turn.queue.append((commands, future, single))
        if not turn.scheduled:
            turn.scheduled = True
            loop.call_soon(self._flush, loop, turn)  # after everything already runnable in this turn
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop, turn: _Turn) -> None:
        turn.scheduled = False
        queued, turn.queue = turn.queue, []
        batch: list[tuple[list[tuple[Any, ...]], asyncio.Future, bool]] = []
        size = 0
        for entry in queued:
            if batch and size + len(entry[0]) > self.max_batch:
                self._start(loop, turn, batch)
                batch, size = [], 0
            batch.append(entry)
            size += len(entry[0])
        if batch:
            self._start(loop, turn, batch)

    def _start(self, loop: asyncio.AbstractEventLoop, turn: _Turn,
               batch: list[tuple[list[tuple[Any, ...]], asyncio.Future, bool]]) -> None:
        task = loop.create_task(self._send(batch))
        turn.sending.add(task)
        task.add_done_callback(turn.sending.discard)

    async def _send(self, batch: list[tuple[list[tuple[Any, ...]], asyncio.Future, bool]]) -> None:
        self.pipelines += 1
        self.commands += sum(len(commands) for commands, _, _ in batch)
        try:
            pipe = self.client.get().pipeline(transaction=False)
            for commands, _, _ in batch:
                for command in commands:
                    pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the round trip failed (or was cancelled): every caller sees it
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else ConnectionError("pipeline cancelled"))
            if not isinstance(e, Exception):
                raise
            return
        at = 0
        for commands, future, single in batch:
            mine, at = replies[at:at + len(commands)], at + len(commands)
            if future.done():  # the caller was cancelled
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine[0] if single else mine)
