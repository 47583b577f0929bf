"""The history stage: the user's online row (recent items, seen set, user features), read once per request.

Its output (:class:`UserRow`) is the request's history (the body's own ``history`` when given), the
user's already-seen set (for the candidate stage) and whether the store answered; the row itself is kept
on ``state.user_features`` for feature hydration (the user columns), so a cache-miss request reads the
user's row in one round trip.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.pipeline.features.client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState


class UserRow(NamedTuple):
    """The history stage's output."""

    items: list[int]  # the request's history, else the online store's recent items
    seen: np.ndarray  # the user's online already-seen set (empty when not read, or the store is down)
    store_down: bool  # the feature store did not answer: the service skips hydration


def _seen(state: RequestState) -> np.ndarray:
    user = state.user_features
    return user.seen_item_ids if user is not None else np.zeros(0, np.int64)


class UserHistory:
    """Reads the user's row; Redis down -> a degraded reason and an empty history, never an exception."""

    name = "history"

    def __init__(self, cfg: ServingConfig, features: FeatureGateway, metrics: ServingMetrics):
        self.cfg = cfg
        self.features = features
        self.metrics = metrics

    async def __call__(self, state: RequestState, user_id: int, given: list[int] | None) -> UserRow:
        """The request's history (else the online store's recent items) and the user's seen set."""
        if given is not None:
            return UserRow(list(given), _seen(state), False)
        if state.user_features is not None:  # already read for experiment targeting
            return UserRow(state.user_features.recent_item_ids, _seen(state), False)
        with self.metrics.stage(self.name, state.timings):
            try:
                async with asyncio.timeout(self.cfg.feature_timeout_s * 5):
                    user = await self.features.fetch_user_async(user_id)
            except (FeatureStoreUnavailable, TimeoutError):
                state.degrade("feature_store_unavailable")
                return UserRow([], np.zeros(0, np.int64), True)  # nothing was read: no seen set
            except FeatureReadError:
                state.degrade("feature_read_failed")
                return UserRow([], np.zeros(0, np.int64), False)
        state.user_features = user
        return UserRow(user.recent_item_ids, user.seen_item_ids, False)
