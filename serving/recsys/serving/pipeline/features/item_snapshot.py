"""The ingress's item-feature snapshot: the whole catalog's online item features held in memory.

Why: at 1M items a request's ~480 candidates were nearly all cold in the read-through item cache, and
reading their rows cost ~19 ms of ingress CPU per request. Item features change rarely (a
materialization, streamed counters), so the ingress reads every catalog item once before it serves and
keeps the copy fresh in the background instead:

* the first pass runs at full speed (chunks of ``CHUNK`` items, pipelined, in a worker thread);
* every ``item_feature_version_poll_s`` (5 s) the loop asks Redis which items had real-time events
  applied since its last poll (the overlay's ``touched`` set, written by the same Lua script that
  applies the events) and re-reads just those: streamed item counters reach ranking within ~5 s,
  at a cost proportional to the event rate, not the catalog size;
* in the same poll it reads the feature project's materialization counter (bumped by
  ``recsys features materialize``); when it moves, the current pass is dropped and a full-speed pass
  re-reads everything, so a materialization reaches ranking in about one first-pass time;
* meanwhile a slow background pass (``item_feature_refresh_items_per_s``, one pass per
  max(``item_feature_cache_s``, items / rate)) re-reads the whole catalog as a safety net for
  changes neither signal covers.

Rows live in :class:`~recsys.serving.pipeline.features.item_cache.ItemFeatureCache` (the same columns the
per-request read fills), so items the snapshot does not hold (posted after start-up, or the first pass
failed because Redis was down) still fall back to the per-request read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from enum import Enum

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.pipeline.features.client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable

log = logging.getLogger(__name__)


class PassResult(Enum):
    DONE = "done"
    FAILED = "failed"  # a read failed (store down): the rows already held keep serving
    NEW_VERSION = "new_version"  # the materialization counter moved mid-pass: start over at full speed


class ItemFeatureSnapshot:
    """Background loop that keeps every catalog item's features in the gateway's item cache."""

    CHUNK = 2000  # items per pipelined read (~75 ms of CPU each)
    TOUCHED_PER_POLL = 20_000  # touched items re-read per poll at most (~0.75 s of CPU); the rest wait a poll

    def __init__(self, cfg: ServingConfig, features: FeatureGateway, item_ids: np.ndarray):
        self.cfg = cfg
        self.features = features
        self.item_ids = np.asarray(item_ids, np.int64)
        self.loaded = False  # a full pass has completed: requests read no item rows
        self._task: asyncio.Task | None = None
        self._first_pass = asyncio.Event()
        self._version: int | None = None  # materialization counter the running pass started from
        self._cursor: int | None = None  # Redis server time (ms) of the last touched-items poll
        self._polled_at = -math.inf
        self.touched_refreshed = 0  # items re-read because a real-time event changed them

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.item_feature_snapshot and self.features.item_cache is not None and len(self.item_ids))

    def period_s(self) -> float:
        """Seconds one paced pass over the catalog takes."""
        return max(self.cfg.item_feature_cache_s, len(self.item_ids) / self.cfg.item_feature_refresh_items_per_s)

    async def start(self, wait_s: float | None = None) -> bool:
        """Start the loop and wait up to ``wait_s`` (default ``item_feature_snapshot_wait_s``) for its first
        pass; True when the whole catalog is in memory. A failed or slow first pass is not fatal."""
        if not self.enabled or self._task is not None:
            return False
        self._task = asyncio.get_running_loop().create_task(self._loop())
        wait = self.cfg.item_feature_snapshot_wait_s if wait_s is None else wait_s
        try:
            await asyncio.wait_for(asyncio.shield(self._first_pass.wait()), wait)
        except TimeoutError:
            log.warning("item feature snapshot: first pass over %d items still running after %.0f s; "
                        "serving meanwhile", len(self.item_ids), wait)
        return self.loaded

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _read_version(self) -> int | None:
        self._polled_at = time.monotonic()
        try:
            return await asyncio.to_thread(self.features.materialization_version)
        except (FeatureStoreUnavailable, FeatureReadError):
            return None

    async def _start_cursor(self) -> None:
        """The touched-items cursor at the start of the first pass: events from then on are re-read."""
        if self._cursor is None:
            try:
                got = await asyncio.to_thread(self.features.touched_items_since, None)
            except (FeatureStoreUnavailable, FeatureReadError):
                return
            self._cursor = None if got is None else got[1]

    async def refresh_touched(self) -> int:
        """Re-read the catalog items whose real-time overlay changed since the last call; how many."""
        if self._cursor is None:
            return 0
        got = await asyncio.to_thread(self.features.touched_items_since, self._cursor, self.TOUCHED_PER_POLL)
        if got is None:
            return 0
        items, cursor = got
        ids = np.asarray(items, np.int64)
        ids = ids[self.features.item_cache.lookup_rows(ids) >= 0]  # posted items are read per request
        for s in range(0, len(ids), self.CHUNK):
            await asyncio.to_thread(self.features.refresh_items, ids[s:s + self.CHUNK])
        self._cursor = cursor  # only after the re-read: a failed one is retried from the same cursor
        self.touched_refreshed += len(ids)
        return len(ids)

    async def _poll(self) -> bool:
        """Every ``item_feature_version_poll_s``: re-read touched items; True when a materialization happened."""
        if time.monotonic() - self._polled_at < self.cfg.item_feature_version_poll_s:
            return False
        v = await self._read_version()
        if v is not None and self._version is not None and v != self._version:
            return True
        try:
            await self.refresh_touched()
        except (FeatureStoreUnavailable, FeatureReadError) as e:
            log.info("item feature snapshot: touched-items refresh failed (retried next poll): %s", e)
        return False

    async def run_pass(self, paced: bool = True) -> PassResult:
        """Re-read every catalog item into the cache in chunks (paced: spread over :meth:`period_s`)."""
        await self._start_cursor()
        self._version = await self._read_version()
        ids, chunk = self.item_ids, self.CHUNK
        pause = self.period_s() * chunk / max(len(ids), 1) if paced else 0.0
        for s in range(0, len(ids), chunk):
            try:
                await asyncio.to_thread(self.features.refresh_items, ids[s:s + chunk])
            except (FeatureStoreUnavailable, FeatureReadError) as e:
                log.info("item feature snapshot pass stopped (stale values keep serving): %s", e)
                return PassResult.FAILED
            if paced:
                end = time.monotonic() + pause
                while (left := end - time.monotonic()) > 0:  # sleep, but keep polling meanwhile
                    if await self._poll():
                        return PassResult.NEW_VERSION
                    await asyncio.sleep(min(left, self.cfg.item_feature_version_poll_s))
        return PassResult.DONE

    async def _loop(self) -> None:
        paced = False  # the first pass runs at full speed: the replica is not serving yet
        while True:
            t0 = time.perf_counter()
            try:
                result = await self.run_pass(paced=paced)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the refresher must outlive any bad row
                log.warning("item feature snapshot pass failed: %r", e)
                result = PassResult.FAILED
            if result is PassResult.DONE and not self.loaded:
                self.loaded = True
                self.features.item_cache.ttl_s = math.inf  # the passes keep rows fresh: no per-request refresh
                log.info("item feature snapshot: %d items in %.1f s", len(self.item_ids), time.perf_counter() - t0)
            self._first_pass.set()
            if result is PassResult.NEW_VERSION:
                log.info("item feature snapshot: new materialization; re-reading %d items now", len(self.item_ids))
            # full speed again after a new materialization, or until one pass has loaded everything
            paced = self.loaded and result is not PassResult.NEW_VERSION
            if result is PassResult.FAILED:
                await asyncio.sleep(self.cfg.item_feature_cache_s or 5.0)  # store down: retry later
