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
