"""Ingress deployment: the FastAPI app (built per replica) in front of the pipeline.

``@serve.ingress()`` without an app plus ``__serve_build_asgi_app__`` lets the app be built
after the constructor, around this replica's own :class:`RecommendationService`, so the same
``create_api`` factory serves Ray and the in-process tests.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from recsys.serving.api import create_api
from recsys.serving.config import ServingConfig
from recsys.serving.kserve_client import KServeRankerClient
from recsys.serving.observability import configure_access_log
from recsys.serving.service import RecommendationService


@serve.ingress()
class Ingress:
    async def __init__(self, cfg: dict[str, Any], shards: list[Any], ranker: Any | None):
        cfg_obj = ServingConfig(**cfg)
        configure_access_log(cfg_obj.access_log)
        if cfg_obj.ranker_endpoint:  # ranking by a KServe predictor over HTTP (no Ranker deployment)
            ranker = KServeRankerClient(cfg_obj.ranker_endpoint, cfg_obj.ranker_endpoint_model,
                                        cfg_obj.ranker_timeout_s)
        self.service = RecommendationService(cfg_obj, shards, ranker)
        await self.service.start()

    def __serve_build_asgi_app__(self):
        return create_api(self.service)

    async def check_health(self) -> None:
        if not self.service.ready:
            raise RuntimeError("models not loaded")
