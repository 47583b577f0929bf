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
from recsys.serving.ranker import Ranker
from recsys.serving.retrieval_shard import RetrievalShard
from recsys.serving.service import RecommendationService


def local_stages(cfg: ServingConfig, shards: list[Any] | None, ranker: Any | None) -> tuple[list[Any], Any | None]:
    """The handles build_graph passed, plus in-process objects for the stages placed ``local``.

    ``ranker_endpoint`` wins over any placement: ranking is then the KServe predictor over HTTP.
    """
    if shards is None:
        shards = [RetrievalShard(cfg, 0, 1)]
    if cfg.ranker_endpoint:
        ranker = KServeRankerClient(cfg.ranker_endpoint, cfg.ranker_endpoint_model, cfg.ranker_timeout_s)
    elif ranker is None and cfg.stages.ranking.placement == "local":
        ranker = Ranker(cfg)
    return shards, ranker


@serve.ingress()
class Ingress:
    async def __init__(self, cfg: dict[str, Any], shards: list[Any] | None, ranker: Any | None):
        cfg_obj = ServingConfig(**cfg)
        configure_access_log(cfg_obj.access_log)
        shards, ranker = local_stages(cfg_obj, shards, ranker)
        self.service = RecommendationService(cfg_obj, shards, ranker)
        await self.service.start()

    def __serve_build_asgi_app__(self):
        return create_api(self.service)

    async def check_health(self) -> None:
        if not self.service.ready:
            raise RuntimeError("models not loaded")
