"""Cross-request batching of the retrieval-shard hop, on the caller's side.

Every request scatters one query vector to every shard. Sent one by one, that is two remote calls per
request (2 shards), each costing the ingress a serialization, a gRPC round trip and a task, which on a
small box is more CPU than the FAISS search itself (< 0.5 ms). A :class:`ShardClient` sends at most one
call per shard at a time: a query that arrives while a call is in flight waits for it to return and
then goes out with every other query that queued meanwhile, as one ``search_many`` call. Nothing waits
for a batch to fill (no timer): with nothing in flight a request calls at once, itself (at c = 1 the
path is the unbatched one), and under load the batch size follows the load, as ``@serve.batch`` with no
wait does for the ranker.

Answers are unchanged: the shard searches each query alone with its own k
(:meth:`recsys.serving.deployments.retrieval_shard.RetrievalShardCore.search_many`). Local shard objects
(tests, ``stages.retrieval.placement: local``) are called directly: there is no hop to save.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from recsys.serving.pipeline.state import Target

SHARD_MAX_BATCH = 64
"""Queries per ``search_many`` call at most (the ingress's ``max_ongoing_requests`` is 64)."""


@dataclass
class _Pending:
    vec: np.ndarray  # (dim,) float32
    k: int
    version: str
    future: asyncio.Future


class ShardClient:
    """One retrieval shard as the ingress calls it: ``await client.search(vec, k, version)``."""

    def __init__(self, target: Target, max_batch: int = SHARD_MAX_BATCH):
        self.target = target
        self.max_batch = max_batch
        self.calls = 0  # remote calls sent (tests and benchmarks read it)
        self.queries = 0  # queries they carried
        self._queue: list[_Pending] = []
        self._busy = False  # a call to the shard is in flight (sent by a request, or by the drain task)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sender: asyncio.Task | None = None

    async def search(self, vec: np.ndarray, k: int, version: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (rows (1, k'), scores (1, k')) of one query vector (1, dim), as the shard's ``search``."""
        if not self.target.is_handle:
            return await self.target.call("search", vec, k, version)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): nothing of the old one can still answer
            self._loop, self._busy, self._queue = loop, False, []
        p = _Pending(np.asarray(vec, np.float32).reshape(-1), int(k), version, loop.create_future())
        if self._busy:  # wait for the call in flight, then go out with everything queued meanwhile
            self._queue.append(p)
            return await p.future
        self._busy = True  # nothing in flight: this request calls at once, as without batching
        try:
            return (await self._call(version, [p]))[0]
        finally:
            self._after_call(loop)

    def _after_call(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue:
            self._sender = loop.create_task(self._drain())  # stays busy until the queue is empty
        else:
            self._busy = False

    async def _drain(self) -> None:
        """Send what queued, one call at a time, until the queue is empty (a request never waits on a timer)."""
        try:
            while self._queue:
                version = self._queue[0].version
                batch = [p for p in self._queue if p.version == version][: self.max_batch]
                taken = {id(p) for p in batch}
                self._queue = [p for p in self._queue if id(p) not in taken]
                batch = [p for p in batch if not p.future.done()]  # callers that timed out meanwhile
                if batch:
                    await self._send(version, batch)
        finally:
            self._busy = False

    async def _call(self, version: str, batch: list[_Pending]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One ``search_many`` call for ``batch``: each query's (rows (1, k'), scores (1, k'))."""
        queries = np.stack([p.vec for p in batch])
        ks = np.array([p.k for p in batch], np.int64)
        self.calls += 1
        self.queries += len(batch)
        rows, scores, lengths = await self.target.call("search_many", queries, ks, version)
        ends = np.cumsum(lengths)
        return [(rows[end - n: end][None, :], scores[end - n: end][None, :]) for end, n in zip(ends, lengths,
                                                                                              strict=True)]

    async def _send(self, version: str, batch: list[_Pending]) -> None:
        """:meth:`_call` for queued requests: results (or the error: each caller degrades) into their futures."""
        try:
            results = await self._call(version, batch)
        except Exception as e:  # noqa: BLE001 - handed to every caller of the batch
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
