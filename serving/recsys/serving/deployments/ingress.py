"""Ingress deployment: the FastAPI app (built per replica) in front of the pipeline.

``@serve.ingress()`` without an app plus ``__serve_build_asgi_app__`` lets the app be built
after the constructor, around this replica's own :class:`RecommendationService`, so the same
``create_api`` factory serves Ray and the in-process tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ray import serve

from recsys.serving.config import ServingConfig
from recsys.serving.deployments.ranker import Ranker
from recsys.serving.deployments.retrieval_shard import RetrievalShard
from recsys.serving.http.api import create_api
from recsys.serving.http.observability import configure_access_log
from recsys.serving.models.artifacts import ArtifactError
from recsys.serving.models.rollout import RolloutSpec, replica_id
from recsys.serving.pipeline.scoring.kserve_client import KServeRankerClient
from recsys.serving.pipeline.service import RecommendationService

log = logging.getLogger(__name__)


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
    async def __init__(self, cfg: dict[str, Any], shards: list[Any] | None, ranker: Any | None,
                       redeploy: Callable[..., None] | None = None):
        cfg_obj = ServingConfig(**cfg)
        configure_access_log(cfg_obj.access_log)
        deployed = list(shards or []) + ([ranker] if ranker is not None else [])
        shards, ranker = local_stages(cfg_obj, shards, ranker)
        # stages built here (placement: local) get the fleet-wide rollout from this replica's reconfigure
        self._local = [s for s in [*shards, ranker] if s is not None and s not in deployed
                       and hasattr(s, "reconfigure")]
        self.service = RecommendationService(cfg_obj, shards, ranker, redeploy=redeploy)
        await self.service.start()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Fleet-wide rollout: every ingress replica applies the same spec (see rollout.py)."""
        try:
            for stage in self._local:
                await stage.reconfigure(user_config)
            await self.service.apply_rollout(RolloutSpec(**user_config))
        except ArtifactError as e:  # a broken version must not take the replica down: keep the old bundle
            log.error("rollout refused on this replica, still serving %s: %s", self.service.active, e)
            self.service.metrics.stage_errors.labels("rollout").inc()

    async def replica_versions(self) -> dict:
        """Read-only, per replica: the bundle this replica serves (``active``) and the retrieval versions it holds."""
        active = self.service.active
        return {"replica": replica_id(), "active": active.as_dict() if active else None,
                "loaded": sorted(self.service.loader._retrieval)}

    def __serve_build_asgi_app__(self):
        return create_api(self.service)

    async def check_health(self) -> None:
        if not self.service.ready:
            raise RuntimeError("models not loaded")
