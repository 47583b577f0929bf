"""Feature hydration: the user's recent history and the online features of user + candidates."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import numpy as np

from recsys.serving.artifacts import Catalog
from recsys.serving.config import ServingConfig
from recsys.serving.feature_client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable, HydratedFeatures
from recsys.serving.metrics import ServingMetrics
from recsys.serving.stages.base import RequestState

log = logging.getLogger(__name__)


class FeatureHydration:
    """Reads the online store; Redis down -> a degraded reason and ``None``, never an exception.

    One Redis round trip per request: :meth:`history` reads the user's row (recent items and user
    features) and keeps it on the request state; :meth:`__call__` combines it with the candidates'
    item features from the in-process item cache (``item_feature_cache_s``), reading Redis again
    only for items missing from the cache or older than that. A request that brings its own
    ``history`` reads user and items together in the one round trip.

    With ``item_feature_snapshot`` (the default) :meth:`start` reads every catalog item into that
    cache before the replica serves, and a background loop re-reads the whole catalog, paced by
    ``item_feature_refresh_items_per_s``; requests then read no item rows at all (at 1M items a
    request's ~480 cold item reads were ~19 ms of ingress CPU). Items the snapshot does not hold
    (posted after start-up, or the first pass failed) fall back to the per-request read.
    """

    SNAPSHOT_CHUNK = 2000  # items per pipelined read of a snapshot pass (~20 ms of CPU each)

    name = "hydration"

    def __init__(self, cfg: ServingConfig, features: FeatureGateway, metrics: ServingMetrics,
                 catalog: Catalog | None = None):
        self.cfg = cfg
        self.features = features
        self.metrics = metrics
        self._refreshing: asyncio.Task | None = None
        self._snapshot_task: asyncio.Task | None = None
        self._snapshot_ids = np.zeros(0, np.int64)
        self._first_pass = asyncio.Event()
        self._loaded = False
        if (catalog is not None and len(catalog.index)
                and features.enable_item_cache(catalog.index.lookup, len(catalog.index))):
            self._snapshot_ids = np.array(catalog.index.ids, np.int64)  # the rows the cache can hold

    # ------------------------------------------------------------------ item-feature snapshot
    @property
    def snapshot_enabled(self) -> bool:
        return bool(self.cfg.item_feature_snapshot and self.features.item_cache is not None
                    and len(self._snapshot_ids))

    async def start(self, wait_s: float | None = None) -> bool:
        """Start the snapshot loop and wait up to ``wait_s`` (default ``item_feature_snapshot_wait_s``) for
        its first, full-speed pass; True when the whole catalog is in memory.

        A first pass that fails (Redis down) or outlasts the wait is not fatal: requests read items
        on demand as without a snapshot while the loop keeps going.
        """
        if not self.snapshot_enabled or self._snapshot_task is not None:
            return False
        self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot_loop())
        wait = self.cfg.item_feature_snapshot_wait_s if wait_s is None else wait_s
        try:
            await asyncio.wait_for(asyncio.shield(self._first_pass.wait()), wait)
        except TimeoutError:
            log.warning("item feature snapshot: first pass over %d items still running after %.0f s; "
                        "serving meanwhile", len(self._snapshot_ids), wait)
        return self._loaded

    def snapshot_period_s(self) -> float:
        """Seconds one background pass over the catalog takes (the staleness bound of item features)."""
        return max(self.cfg.item_feature_cache_s, len(self._snapshot_ids) / self.cfg.item_feature_refresh_items_per_s)

    async def snapshot_pass(self, paced: bool = True) -> bool:
        """Re-read every catalog item into the cache in chunks; False when a read failed (stale rows stay)."""
        ids, chunk = self._snapshot_ids, self.SNAPSHOT_CHUNK
        pause = self.snapshot_period_s() * chunk / max(len(ids), 1) if paced else 0.0
        for s in range(0, len(ids), chunk):
            try:
                await asyncio.to_thread(self.features.refresh_items, ids[s:s + chunk])
            except (FeatureStoreUnavailable, FeatureReadError) as e:
                log.info("item feature snapshot pass stopped (stale values keep serving): %s", e)
                return False
            if pause:
                await asyncio.sleep(pause)
        return True

    async def _snapshot_loop(self) -> None:
        paced = False  # the first pass runs at full speed: the replica is not serving yet
        while True:
            t0 = time.perf_counter()
            try:
                ok = await self.snapshot_pass(paced=paced)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the refresher must outlive any bad row
                log.warning("item feature snapshot pass failed: %r", e)
                ok = False
            if ok and not self._loaded:
                self._loaded = True
                self.features.item_cache.ttl_s = math.inf  # the passes keep rows fresh: no per-request refresh
                log.info("item feature snapshot: %d items in %.1f s", len(self._snapshot_ids), time.perf_counter() - t0)
            self._first_pass.set()
            paced = True
            if not ok:
                await asyncio.sleep(self.cfg.item_feature_cache_s or 5.0)  # store down: retry later

    async def stop(self) -> None:
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            self._snapshot_task = None

    def _refresh_later(self, item_ids: np.ndarray) -> None:
        """One background re-read of stale cached items at a time (no storm when many expire together)."""
        if self._refreshing is not None and not self._refreshing.done():
            return

        async def refresh() -> None:
            try:
                await asyncio.to_thread(self.features.refresh_items, item_ids)
            except (FeatureStoreUnavailable, FeatureReadError) as e:  # the stale values keep serving
                log.info("item feature refresh failed: %s", e)

        self._refreshing = asyncio.get_running_loop().create_task(refresh())

    async def history(self, state: RequestState, user_id: int, given: list[int] | None) -> tuple[list[int], bool]:
        """(history, feature store down): the request's history, else the online store's recent items."""
        if given is not None:
            return list(given), False
        with self.metrics.stage("history", state.timings):
            try:
                async with asyncio.timeout(self.cfg.feature_timeout_s * 5):
                    user = await self.features.fetch_user_async(user_id)
            except (FeatureStoreUnavailable, TimeoutError):
                state.degrade("feature_store_unavailable")
                return [], True
            except FeatureReadError:
                state.degrade("feature_read_failed")
                return [], False
        state.user_features = user
        return user.recent_item_ids, False

    async def __call__(self, state: RequestState, user_id: int, item_ids: np.ndarray) -> HydratedFeatures | None:
        with self.metrics.stage(self.name, state.timings):
            try:
                cached, refresh = self.features.items_from_cache(state.user_features, item_ids)  # no I/O
                if len(refresh):
                    self._refresh_later(refresh)
                if cached is not None:
                    return cached
                # hundreds of HMGETs: redis-py's sync pipeline in a thread costs ~half the CPU of redis.asyncio's
                async with asyncio.timeout(self.cfg.feature_timeout_s * 5):
                    return await asyncio.to_thread(self.features.fetch_items, user_id, state.user_features, item_ids)
            except (FeatureStoreUnavailable, TimeoutError):
                state.degrade("feature_store_unavailable")
            except FeatureReadError:
                state.degrade("feature_read_failed")
        return None
