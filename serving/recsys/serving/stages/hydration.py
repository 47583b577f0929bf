"""Feature hydration: the user's recent history and the online features of user + candidates."""

from __future__ import annotations

import asyncio

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.feature_client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable, HydratedFeatures
from recsys.serving.metrics import ServingMetrics
from recsys.serving.stages.base import RequestState


class FeatureHydration:
    """Reads the online store; Redis down -> a degraded reason and ``None``, never an exception."""

    name = "hydration"

    def __init__(self, cfg: ServingConfig, features: FeatureGateway, metrics: ServingMetrics):
        self.cfg = cfg
        self.features = features
        self.metrics = metrics

    async def history(self, state: RequestState, user_id: int, given: list[int] | None) -> tuple[list[int], bool]:
        """(history, feature store down): the request's history, else the online store's recent items."""
        if given is not None:
            return list(given), False
        with self.metrics.stage("history", state.timings):
            try:
                return (await asyncio.to_thread(self.features.fetch, user_id, [])).recent_item_ids, False
            except FeatureStoreUnavailable:
                state.degrade("feature_store_unavailable")
                return [], True
            except FeatureReadError:
                state.degrade("feature_read_failed")
                return [], False

    async def __call__(self, state: RequestState, user_id: int, item_ids: np.ndarray) -> HydratedFeatures | None:
        with self.metrics.stage(self.name, state.timings):
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(self.features.fetch, user_id, item_ids.tolist()),
                    self.cfg.feature_timeout_s * 5,
                )
            except (FeatureStoreUnavailable, TimeoutError):
                state.degrade("feature_store_unavailable")
            except FeatureReadError:
                state.degrade("feature_read_failed")
        return None
