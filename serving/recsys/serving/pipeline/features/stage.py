"""Feature hydration: the online features of the user + the candidates (the user's row read by history.py)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.models.artifacts import Catalog
from recsys.serving.pipeline.features.client import (
    FeatureGateway,
    FeatureReadError,
    FeatureStoreUnavailable,
    HydratedFeatures,
)
from recsys.serving.pipeline.features.item_snapshot import ItemFeatureSnapshot
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState

log = logging.getLogger(__name__)


class FeatureHydration:
    """Reads the online store; Redis down -> a degraded reason and ``None``, never an exception.

    One Redis round trip per request: the history stage (``history.py``) reads the user's row (recent
    items and user features) and keeps it on the request state; :meth:`__call__` combines it with the
    candidates' item features from the in-process item cache (``item_feature_cache_s``), reading Redis again
    only for items missing from the cache or older than that. A request that brings its own
    ``history`` reads user and items together in the one round trip.

    With ``item_feature_snapshot`` (the default) :meth:`start` reads every catalog item into that
    cache before the replica serves and keeps it fresh in the background
    (:mod:`recsys.serving.pipeline.features.item_snapshot`); requests then read no item rows at all.
    """

    name = "hydration"

    def __init__(self, cfg: ServingConfig, features: FeatureGateway, metrics: ServingMetrics,
                 catalog: Catalog | None = None):
        self.cfg = cfg
        self.features = features
        self.metrics = metrics
        self._refreshing: asyncio.Task | None = None
        ids = np.zeros(0, np.int64)
        if (catalog is not None and len(catalog.index)
                and features.enable_item_cache(catalog.index.lookup, len(catalog.index))):
            ids = np.array(catalog.index.ids, np.int64)  # the rows the cache can hold
        self.snapshot = ItemFeatureSnapshot(cfg, features, ids)

    async def start(self, wait_s: float | None = None) -> bool:
        """Load the item-feature snapshot before serving (:meth:`ItemFeatureSnapshot.start`)."""
        return await self.snapshot.start(wait_s)

    async def stop(self) -> None:
        await self.snapshot.stop()

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
