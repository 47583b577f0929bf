"""The recommendation pipeline the ingress runs per request: a short composition of stage objects.

    cache ─> history ─> candidates (embed, shards, item-kNN, popularity, filters) ─> scoring (features + ranker)
          ─> reranking (MMR, genre caps, freshness) ─> exploration ─> exposure log ─> cache store ─> response

The stages live in ``recsys.serving.pipeline.<stage>.stage``; what a request is served with (versions, sources,
exploration state) is one :class:`~recsys.serving.models.bundle.Bundle`, swapped as a whole on reload.
Remote stages (shards, ranker) are :class:`~recsys.serving.pipeline.state.Target` objects: a Serve deployment
handle in production, the plain deployment class in unit tests. A failing dependency degrades the
answer (``degraded_reasons``) instead of returning 500.

With ``stage_yield`` (off by default), concurrent requests move through the stages together: after each stage
a request yields to the event loop (:meth:`RecommendationService._next_stage`), so the requests one batched
shard call released run candidates, then hydration, then scoring... one after another instead of each
running to its end, and each stage's code and data stay in the CPU caches across them: 5-14 % less CPU per
request at 4-16 concurrent requests in one process (``benchmarks/ingress_ab.py --compare stage-yield``).
Deployed it saved only 2-3 % of the ingress's CPU, and a burst's requests finish together rather than one
by one (p99 at c = 32 through HAProxy 206 vs 142 ms, same run), hence off by default. Answers are the same
either way (a stage reads only its own request's state).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from recsys.platform.model_store import ModelStore
from recsys.serving.catalog.feed import LiveCatalog
from recsys.serving.catalog.metadata import ItemMetadata
from recsys.serving.config import ServingConfig
from recsys.serving.http.observability import current_request
from recsys.serving.http.schemas import (
    RecommendationRequest,
    RecommendationResponse,
    SimilarItemsResponse,
)
from recsys.serving.models.artifacts import ArtifactError, Catalog, RetrievalArtifacts, read_catalog
from recsys.serving.models.bundle import ActiveVersions, Bundle, BundleLoader
from recsys.serving.models.lifecycle import BundleLifecycle
from recsys.serving.models.rollout import RolloutSpec
from recsys.serving.pipeline.cache.result_cache import ResultCache, request_shape_hash
from recsys.serving.pipeline.cache.stage import ResultCacheStage
from recsys.serving.pipeline.candidates.stage import CandidateGeneration, ShardedRetrieval
from recsys.serving.pipeline.errors import NotReadyError, RequestLimitError, UnknownItemError
from recsys.serving.pipeline.experiments import NO_EXPERIMENT, ExperimentGateway, VariantChoice
from recsys.serving.pipeline.exploration.stage import Exploration
from recsys.serving.pipeline.exploration.thompson import ThompsonExplorer
from recsys.serving.pipeline.features.client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable
from recsys.serving.pipeline.features.history import UserHistory
from recsys.serving.pipeline.features.stage import FeatureHydration
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.reranking.stage import Reranking
from recsys.serving.pipeline.scoring.inputs import ranker_will_score
from recsys.serving.pipeline.scoring.stage import Scoring
from recsys.serving.pipeline.similar_items import SimilarItems
from recsys.serving.pipeline.state import RequestState, Target

__all__ = ["ActiveVersions", "NotReadyError", "RecommendationService", "RequestLimitError", "Target",
           "UnknownItemError"]

log = logging.getLogger(__name__)


class RecommendationService(BundleLifecycle):
    """Holds the ingress-side state (bundle, catalog, stages) and composes the stages per request.

    Loading, hot swap and fleet-wide rollout of the served versions:
    :class:`~recsys.serving.models.lifecycle.BundleLifecycle`.
    """

    def __init__(self, cfg: ServingConfig, shards: list[Any], ranker: Any | None,
                 features: FeatureGateway | None = None, experiments: ExperimentGateway | None = None,
                 redeploy: Callable[[Any, RolloutSpec, str], None] | None = None):
        import torch

        torch.set_num_threads(1)
        self.cfg = cfg
        self.redeploy = redeploy
        self.shards = [Target.wrap(s) for s in shards]
        self.ranker = None if ranker is None else Target.wrap(ranker)
        self.features = features or FeatureGateway(cfg)
        self.experiments = experiments or ExperimentGateway(cfg)
        self.metrics = m = ServingMetrics()
        self._catalog_items = read_catalog(cfg.catalog_path)  # the one read of the catalog file
        self.catalog = Catalog.empty() if self._catalog_items is None else Catalog.from_items(self._catalog_items)
        # posted items (POST /v1/items, the Redis catalog feed) grow catalog, metadata and content index
        self.live = LiveCatalog(self.catalog, ItemMetadata.from_items(self._catalog_items), cfg.redis_url,
                                content_dim=cfg.content_dim, poll_s=cfg.catalog_poll_s)
        self.loader = BundleLoader(cfg, ModelStore(cfg.model_store_uri), self.catalog, self.ranker is not None)
        self.bundle: Bundle | None = None
        self._load_lock = asyncio.Lock()
        self._reload_task: asyncio.Task | None = None
        self._rollout: RolloutSpec | None = None  # the last spec this replica applied (user_config)
        self._preloaded: list[ActiveVersions] = []
        self.yield_between_stages = cfg.stage_yield  # see the module doc (benchmarks/ingress_ab.py flips it)
        # the stages, in pipeline order
        self.cache = ResultCacheStage(ResultCache(cfg.cache, cfg.redis_url), m)
        self.history = UserHistory(cfg, self.features, m)
        self.hydration = FeatureHydration(cfg, self.features, m, self.catalog)
        self.retrieval = ShardedRetrieval(cfg, self.shards, m)
        self.candidates = CandidateGeneration(cfg, self.catalog, self.retrieval, m, self.live)
        self.scoring = Scoring(cfg, self.catalog, self.ranker, self.loader, m)
        self.reranking = Reranking(cfg, self.catalog, m)
        self.exploration = Exploration(cfg, self.catalog, m, self.live)
        self.similar_items = SimilarItems(self.retrieval, self.live)

    # ------------------------------------------------------------------ state
    @property
    def ready(self) -> bool:
        return self.bundle is not None

    @property
    def active(self) -> ActiveVersions | None:
        return self.bundle.versions if self.bundle is not None else None

    @property
    def item_meta(self) -> ItemMetadata:
        return self.live.meta

    @property
    def explorer(self) -> ThompsonExplorer | None:
        return self.bundle.explorer if self.bundle is not None else None

    def _require_bundle(self) -> Bundle:
        if self.bundle is None:
            raise NotReadyError("models are still loading")
        return self.bundle

    def invalidate_user(self, user_id: int) -> bool:
        """A new event of the user: all their cached answers are stale (blocking; call in a thread)."""
        return self.cache.invalidate_user(user_id)

    # ------------------------------------------------------------------ recommend
    def _check_limits(self, req: RecommendationRequest) -> None:
        lim = self.cfg.limits
        if req.n > lim.max_n:
            raise RequestLimitError("n", f"n must be <= {lim.max_n}")
        if len(req.exclude) > lim.max_exclude:
            raise RequestLimitError("exclude", f"exclude may hold at most {lim.max_exclude} ids")
        if req.history is not None and len(req.history) > lim.max_history:
            raise RequestLimitError("history", f"history may hold at most {lim.max_history} ids")
        if len(req.context) > lim.max_context_keys:
            raise RequestLimitError("context", f"context may hold at most {lim.max_context_keys} keys")

    async def _retrieval_artifacts(self, state: RequestState, version: str, bundle: Bundle
                                   ) -> tuple[str, RetrievalArtifacts]:
        """The variant's retrieval version, or the bundle's when the experiment names a missing one."""
        art = self.loader.cached_retrieval(version)
        if art is not None:
            return version, art
        try:
            return version, await asyncio.to_thread(self.loader.retrieval, version)
        except ArtifactError:
            state.degrade("experiment_version_unavailable")
            default = bundle.versions.retrieval
            return default, self.loader.retrieval(default)

    async def _assign(self, state: RequestState, req: RecommendationRequest) -> VariantChoice:
        """Experiment assignment with server-side targeting attributes (never the request body's context).

        Only when some experiment targets is the user's stored row read first (it is kept on ``state`` and
        the history stage reuses it, so the answer costs no extra round trip on a cache miss).
        """
        if not self.experiments.needs_attributes:
            return self.experiments.assign(req.user_id, None)
        stored = None
        try:
            async with asyncio.timeout(self.cfg.feature_timeout_s * 5):
                stored = await self.features.fetch_user_async(req.user_id)
            state.user_features = stored
        except (FeatureStoreUnavailable, FeatureReadError, TimeoutError):
            state.degrade("targeting_features_unavailable")
        return self.experiments.assign(req.user_id, self.experiments.targeting_attributes(
            req.user_id, stored, req.context))

    async def recommend(self, req: RecommendationRequest, request_id: str | None = None) -> RecommendationResponse:
        bundle = self._require_bundle()
        self._check_limits(req)
        t_start = time.perf_counter()
        state = RequestState(request_id or uuid.uuid4().hex)
        choice = await self._assign(state, req) if self.experiments.enabled else NO_EXPERIMENT
        r_version = choice.retrieval_version or bundle.versions.retrieval
        k_version = choice.ranking_version or bundle.versions.ranking
        ctx = current_request()
        if ctx is not None:  # the access log line reads these (same objects, filled in as we go)
            ctx.user_id, ctx.experiment, ctx.variant = req.user_id, choice.experiment, choice.variant
            ctx.timings, ctx.degraded = state.timings, state.degraded

        cache_variant = choice.cache_key
        shape = request_shape_hash({"req": req.model_dump(mode="json", exclude={"user_id"}),
                                    "versions": [r_version, k_version], "epoch": bundle.cache_epoch,
                                    "catalog": self.live.version})  # a posted item: new answers, not replays
        # the cache lookup and the user's online row (history) are independent Redis reads: overlap them
        # (on a hit the user row goes unused; on a miss the two round trips cost one)
        (lookup, hit), user = await asyncio.gather(self.cache(state, req.user_id, cache_variant, shape),
                                                   self.history(state, req.user_id, req.history))
        if ctx is not None:
            ctx.cache = "hit" if lookup.hit else ("miss" if self.cfg.cache.enabled else "bypass")
        if hit is not None:  # a replay: logged with the original decision's propensities and id
            return self._finish(req, choice, state, hit, t_start, lookup.propensities, cached_from=lookup.decision_id)

        r_version, art = await self._retrieval_artifacts(state, r_version, bundle)
        history, explore = user.items, bundle.explorer is not None and req.diversity.exploration is not False
        cset = await self.candidates(state, req, art, r_version, history, bundle.sources, user.seen,
                                     bundle.explorer.new_item_ids if explore else None)  # the slot's, filtered here
        await self._next_stage()
        hydrated = None  # the candidates' features, read only when the ranker will score them
        if not user.store_down and ranker_will_score(len(cset), cset.cold, self.ranker, k_version):
            hydrated = await self.hydration(state, req.user_id, cset.cands.item_ids)
            await self._next_stage()
        scores = await self.scoring(state, req, cset, k_version, hydrated, bundle.sources)
        await self._next_stage()
        items = await self.reranking(state, req, cset, scores, self.reranking.params(req, choice))
        await self._next_stage()
        items, propensities = await self.exploration(state, req, items, bundle.explorer, cset.explore_pool,
                                                     choice.reranking, history)
        await self._next_stage()

        versions = {"retrieval": r_version, **({"ranking": k_version} if k_version else {}),
                    **dict(bundle.versions.sources)}
        for reason in state.degraded:
            self.metrics.degraded.labels(reason).inc()
        self._enrich(items)
        response = RecommendationResponse(
            request_id=state.request_id, user_id=req.user_id, items=items, model_versions=versions,
            degraded=bool(state.degraded), degraded_reasons=state.degraded, cold_start=cset.cold,
            ranking=state.ranking, experiment=choice.experiment, variant=choice.variant,
        )
        decision_id = uuid.uuid4().hex  # the server's exposure id of this decision (and of its cached replays)
        await self.cache.store(state, req.user_id, cache_variant, shape, lookup, response, propensities, decision_id)
        return self._finish(req, choice, state, response, t_start, propensities, decision_id)

    async def _next_stage(self) -> None:
        """Yield to the loop between stages, so concurrent requests take each stage together (module doc)."""
        if self.yield_between_stages:
            await asyncio.sleep(0)

    def _finish(self, req: RecommendationRequest, choice: VariantChoice, state: RequestState,
                response: RecommendationResponse, t_start: float, propensities: list[float] | None = None,
                decision_id: str | None = None, cached_from: str | None = None) -> RecommendationResponse:
        """Exposure log, per-variant counter, total latency: the same for computed and cached answers.

        A cached answer (``cached_from``: the original decision's exposure id) gets a fresh exposure id.
        """
        self.experiments.log_exposure(req.user_id, choice, state.request_id, [it.item_id for it in response.items],
                                      served=response.model_versions, degraded=response.degraded_reasons,
                                      propensities=propensities, exposure_id=decision_id, cached_from=cached_from)
        if choice.experiment:
            self.metrics.variant_requests.labels(choice.experiment, choice.variant or "").inc()
        self.metrics.stage_seconds.labels("total").observe(time.perf_counter() - t_start)
        ctx = current_request()
        if ctx is not None:
            ctx.items = len(response.items)
        return response

    def _enrich(self, items: list) -> None:
        for it, (title, genres) in zip(items, self.item_meta.lookup([it.item_id for it in items]), strict=True):
            it.title = title
            if not it.genres and genres:
                it.genres = genres

    # ------------------------------------------------------------------ similar items
    async def similar(self, item_id: int, n: int) -> SimilarItemsResponse:
        bundle = self._require_bundle()
        if n > self.cfg.limits.max_similar_n:
            raise RequestLimitError("n", f"n must be <= {self.cfg.limits.max_similar_n}")
        state = RequestState(uuid.uuid4().hex)
        art = self.loader.retrieval(bundle.versions.retrieval)
        similar = await self.similar_items(state, bundle, art, item_id, n)
        self._enrich(similar)
        for reason in state.degraded:
            self.metrics.degraded.labels(reason).inc()
        versions = {"retrieval": bundle.versions.retrieval}
        if bundle.versions.item_knn:
            versions["item_knn"] = bundle.versions.item_knn
        ctx = current_request()
        if ctx is not None:
            ctx.timings, ctx.degraded, ctx.items = state.timings, state.degraded, len(similar)
        return SimilarItemsResponse(item_id=item_id, items=similar, model_versions=versions,
                                    degraded=bool(state.degraded), degraded_reasons=state.degraded)

    # ------------------------------------------------------------------ events
    def record_event(self, event: dict[str, Any]) -> None:
        """Serving-side effects of an event: exploration posteriors and the experiment outcome log."""
        explorer = self.explorer
        item_id = int(event["item_id"])
        if explorer is not None and event.get("event_type") in ("click", "purchase") and explorer.is_new(item_id):
            explorer.record_click(item_id)
            self.exploration.record_click(int(event["user_id"]), item_id)
        value = event.get("rating") if event.get("event_type") == "rating" else 1.0
        ts = event.get("ts")  # the event's own time, clamped by ingestion to the allowed clock skew
        self.experiments.log_outcome(int(event["user_id"]), str(event["event_type"]),
                                     float(value if value is not None else 1.0), item_id,
                                     event_id=event.get("event_id"),  # a retried event counts once
                                     ts=float(ts) if isinstance(ts, int | float) else None)
