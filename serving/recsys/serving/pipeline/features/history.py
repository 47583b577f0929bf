"""The history stage: the user's online row (recent items, seen set, user features), read once per request.

Its output is the request's history (the body's own ``history`` when given) and the row itself, kept on
``state.user_features`` for the two later readers: the candidate stage (the seen set) and feature
hydration (the user columns), so a cache-miss request reads the user's row in one round trip.
"""

from __future__ import annotations

import asyncio

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.pipeline.features.client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState


class UserHistory:
    """Reads the user's row; Redis down -> a degraded reason and an empty history, never an exception."""

    name = "history"

    def __init__(self, cfg: ServingConfig, features: FeatureGateway, metrics: ServingMetrics):
        self.cfg = cfg
        self.features = features
        self.metrics = metrics

    async def __call__(self, state: RequestState, user_id: int, given: list[int] | None) -> tuple[list[int], bool]:
        """(history, feature store down): the request's history, else the online store's recent items."""
        if given is not None:
            return list(given), False
        if state.user_features is not None:  # already read for experiment targeting
            return state.user_features.recent_item_ids, False
        with self.metrics.stage(self.name, state.timings):
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

    @staticmethod
    def seen_items(state: RequestState) -> np.ndarray:
        """The user's online already-seen set read by ``__call__`` (empty when not read or down)."""
        user = state.user_features
        return user.seen_item_ids if user is not None else np.zeros(0, np.int64)
