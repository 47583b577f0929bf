"""Result-cache stage: the stored answer for the same user, variant, request shape and bundle."""

from __future__ import annotations

from typing import Any

from recsys.serving.http.schemas import RecommendationResponse
from recsys.serving.pipeline.cache.result_cache import CacheLookup, ResultCache
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState


class ResultCacheStage:
    """Looks up and stores complete answers (redis.asyncio on the request's loop)."""

    name = "cache"

    def __init__(self, cache: ResultCache, metrics: ServingMetrics):
        self.cache = cache
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    @property
    def config(self) -> Any:
        """The result cache's settings (its Redis URL and key prefix: the event consumer invalidates by them)."""
        return self.cache.cfg

    def invalidate_user(self, user_id: int) -> bool:
        """A new event of the user: all their cached answers are stale (blocking; call in a thread)."""
        return self.cache.invalidate_user(user_id)

    async def __call__(self, state: RequestState, user_id: int, variant: str,
                       shape: str) -> tuple[CacheLookup, RecommendationResponse | None]:
        """(the lookup, which the store at the end writes under; the stored answer as this request's response,
        None on a miss or when it no longer parses)."""
        m = self.metrics
        if not self.cache.enabled:
            return CacheLookup(None, 0), None
        with m.stage(self.name, state.timings):
            lookup = await self.cache.aget(user_id, variant, shape)
        (m.cache_hits if lookup.hit else m.cache_misses).inc()
        if lookup.error:
            m.cache_errors.inc()
        return lookup, self.cached_response(lookup, state.request_id)

    def cached_response(self, lookup: CacheLookup, request_id: str) -> RecommendationResponse | None:
        """The stored payload as a response for this request, or None if it no longer parses."""
        if not lookup.hit:
            return None
        try:
            return RecommendationResponse.model_validate({**lookup.payload, "request_id": request_id, "cached": True})
        except ValueError:
            return None

    async def store(self, state: RequestState, user_id: int, variant: str, shape: str, lookup: CacheLookup,
                    response: RecommendationResponse, propensities: list[float] | None = None,
                    decision_id: str | None = None) -> None:
        """Only complete (non-degraded) answers are cached; awaited so a client's next call can hit it.

        The decision's propensities and exposure id are stored with it: a replay logs them again.
        """
        if not self.cache.enabled or response.degraded or lookup.error:
            return
        payload = response.model_dump_json(exclude={"request_id", "cached"})  # pydantic-core, no dict detour
        with self.metrics.stage(self.name, state.timings):
            await self.cache.aput(user_id, variant, shape, lookup.generation, payload, propensities, decision_id)
