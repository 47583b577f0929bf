"""What every stage shares: the per-request state, the remote-call wrapper and the dependency guard.

A stage is a small class with one ``async def __call__`` that reads and writes a :class:`RequestState`
and times itself under its own name in ``recsys_stage_latency_seconds``. Stages never raise for a
failing *dependency* (Redis, a shard, the ranker): they record a degraded reason and fall back, so a
request degrades instead of returning 500. Programming errors are not caught here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

from recsys.serving.pipeline.metrics import ServingMetrics

log = logging.getLogger(__name__)


@dataclass
class RequestState:
    """One request's bookkeeping, shared by every stage it passes through."""

    request_id: str
    degraded: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    user_features: Any = None  # the user's online row, read once by FeatureHydration.history
    ranking: str = "ranker"  # how the list was ordered: ranker | retrieval_only | cold_start (set by Scoring)

    def degrade(self, reason: str) -> None:
        if reason not in self.degraded:
            self.degraded.append(reason)


class Target:
    """A remote stage: ``await target.call("search", ...)`` on a Serve handle or on a local object.

    The same pipeline code runs against Serve deployment handles in production and against the
    plain deployment classes in unit tests (no Ray needed).
    """

    def __init__(self, obj: Any):
        self.obj = obj
        self.is_handle = hasattr(obj, "deployment_name") or type(obj).__name__ == "DeploymentHandle"

    @classmethod
    def wrap(cls, obj: Any) -> Target:
        return obj if isinstance(obj, Target) else cls(obj)

    async def call(self, method: str, *args: Any) -> Any:
        if self.is_handle:
            return await getattr(self.obj, method).remote(*args)
        result = getattr(self.obj, method)(*args)
        return await result if inspect.isawaitable(result) else result


async def guarded(metrics: ServingMetrics, state: RequestState, stage: str, reason: str, coro: Any,
                  timeout: float) -> Any:
    """Await a remote dependency; on failure or timeout record ``reason`` and return ``None``."""
    try:
        async with asyncio.timeout(timeout):  # no extra task per call, unlike wait_for
            return await coro
    except Exception as e:  # noqa: BLE001 - any failure of a remote dependency degrades, never 500s
        log.warning("%s failed (%s): %s", stage, reason, e)
        metrics.stage_errors.labels(stage).inc()
        state.degrade(reason)
        return None
