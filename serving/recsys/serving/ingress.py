"""Ingress deployment: the FastAPI app (built per replica) in front of the pipeline.

``@serve.ingress()`` without an app plus ``__serve_build_asgi_app__`` lets the app be built
after the constructor, around this replica's own :class:`RecommendationService`, so the same
``create_api`` factory serves Ray and the in-process tests.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from recsys.serving.api import create_api
from recsys.serving.artifacts import ArtifactError
from recsys.serving.config import ServingConfig
from recsys.serving.observability import configure_access_log
from recsys.serving.rollout import RolloutSpec
from recsys.serving.service import RecommendationService

log = logging.getLogger(__name__)


@serve.ingress()
class Ingress:
    async def __init__(self, cfg: dict[str, Any], shards: list[Any], ranker: Any | None):
        cfg_obj = ServingConfig(**cfg)
        configure_access_log(cfg_obj.access_log)
        self.service = RecommendationService(cfg_obj, shards, ranker)
        await self.service.start()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Fleet-wide rollout: every ingress replica applies the same spec (see rollout.py)."""
        try:
            await self.service.apply_rollout(RolloutSpec(**user_config))
        except ArtifactError as e:  # a broken version must not take the replica down: keep the old bundle
            log.error("rollout refused on this replica, still serving %s: %s", self.service.active, e)
            self.service.metrics.stage_errors.labels("rollout").inc()

    def __serve_build_asgi_app__(self):
        return create_api(self.service)

    async def check_health(self) -> None:
        if not self.service.ready:
            raise RuntimeError("models not loaded")
