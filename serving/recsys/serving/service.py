"""The recommendation pipeline the ingress runs per request, as a plain class (no Ray needed).

    embed user (TorchScript tower, once) ─┬─> retrieval shards (scatter-gather, merge top-K) ─┐
                                          ├─> item-kNN from recent history ──────────────────┼─> merge + de-dup
                                          └─> popularity ────────────────────────────────────┘      │
    business filters ─> feature hydration (one batched read) ─> ranker (batched) ─> MMR/genre caps/freshness
    ─> Thompson exploration slot ─> exposure log ─> response

Remote stages (shards, ranker) are reached through :class:`Target` objects: a Serve deployment
handle in production, the plain deployment class in unit tests. Every dependency failure lands
in ``degraded_reasons`` instead of an HTTP 500: Redis down -> no features, ranker by retrieval
score / popularity; a shard down or slow -> the other shards and secondary sources answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recsys.platform.model_store import ModelStore
from recsys.serving.ann import merge_topk
from recsys.serving.artifacts import (
    ArtifactError,
    Catalog,
    RankerSpec,
    RetrievalArtifacts,
    load_item_knn,
    load_popularity,
    load_ranker_spec,
    load_retrieval,
    resolve_version,
)
from recsys.serving.candidates import Candidates, ItemKnnCandidates, PopularityCandidates, merge_candidates
from recsys.serving.config import ServingConfig
from recsys.serving.experiment_client import NO_EXPERIMENT, ExperimentGateway, VariantChoice
from recsys.serving.exploration import ThompsonExplorer
from recsys.serving.feature_client import FeatureGateway, FeatureReadError, FeatureStoreUnavailable, HydratedFeatures
from recsys.serving.item_metadata import ItemMetadata
from recsys.serving.metrics import ServingMetrics
from recsys.serving.observability import current_request
from recsys.serving.ranker import build_ranker_inputs
from recsys.serving.reranker import (
    FilterSpec,
    RerankParams,
    business_filter,
    freshness_boost,
    mmr_select,
    normalize,
)
from recsys.serving.result_cache import CacheLookup, ResultCache, request_shape_hash
from recsys.serving.schemas import (
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
    ReloadResponse,
    SimilarItem,
    SimilarItemsResponse,
)

log = logging.getLogger(__name__)


class RequestLimitError(ValueError):
    """A request is well-formed but over a configured limit; ``field`` names it (-> HTTP 422)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class UnknownItemError(KeyError):
    """The item is in no loaded catalog (-> HTTP 404)."""


class NotReadyError(RuntimeError):
    """Models not loaded yet (-> HTTP 503)."""


class Target:
    """A remote stage: ``await target.call("search", ...)`` on a Serve handle or on a local object."""

    def __init__(self, obj: Any):
        self.obj = obj
        self.is_handle = hasattr(obj, "deployment_name") or type(obj).__name__ == "DeploymentHandle"

    async def call(self, method: str, *args: Any) -> Any:
        if self.is_handle:
            return await getattr(self.obj, method).remote(*args)
        result = getattr(self.obj, method)(*args)
        return await result if inspect.isawaitable(result) else result


@dataclass(frozen=True)
class ActiveVersions:
    """What unassigned traffic uses; replaced as a whole on hot swap (one atomic attribute write)."""

    retrieval: str
    ranking: str | None
    popularity: str | None
    item_knn: str | None

    def as_dict(self) -> dict[str, str]:
        out = {"retrieval": self.retrieval}
        for k in ("ranking", "popularity", "item_knn"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        return out


@dataclass
class _Sources:
    popularity: PopularityCandidates | None = None
    item_knn: ItemKnnCandidates | None = None


@dataclass
class _RequestState:
    request_id: str
    degraded: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def degrade(self, reason: str) -> None:
        if reason not in self.degraded:
            self.degraded.append(reason)


class RecommendationService:
    """Holds the ingress-side state (user tower, id maps, catalog, sources) and runs the pipeline."""

    def __init__(self, cfg: ServingConfig, shards: list[Any], ranker: Any | None,
                 features: FeatureGateway | None = None, experiments: ExperimentGateway | None = None):
        import torch

        torch.set_num_threads(1)
        self.cfg = cfg
        self.store = ModelStore(cfg.model_store_uri)
        self.shards = [s if isinstance(s, Target) else Target(s) for s in shards]
        self.ranker = None if ranker is None else (ranker if isinstance(ranker, Target) else Target(ranker))
        self.features = features or FeatureGateway(cfg)
        self.experiments = experiments or ExperimentGateway(cfg)
        self.metrics = ServingMetrics()
        self.catalog = Catalog.load(cfg.catalog_path)
        self.item_meta = ItemMetadata.load(cfg.catalog_path)
        self.cache = ResultCache(cfg.cache, cfg.redis_url)
        self._cache_epoch = ""  # fingerprint of the loaded versions: a swap never serves old cached answers
        self._retrieval: dict[str, RetrievalArtifacts] = {}
        self._specs: dict[str, RankerSpec] = {}
        self._load_lock = asyncio.Lock()
        self._sources = _Sources()
        self.active: ActiveVersions | None = None
        self.explorer: ThompsonExplorer | None = None
        self._reload_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ loading / hot swap
    def _resolve(self, retrieval: str | None, ranking: str | None) -> ActiveVersions:
        r = resolve_version(self.store, self.cfg.retrieval_model, retrieval).version
        rk = None
        if self.ranker is not None:
            try:
                rk = resolve_version(self.store, self.cfg.ranking_model, ranking).version
            except ArtifactError:
                if ranking is not None:
                    raise
        pop = knn = None
        with contextlib.suppress(ArtifactError):
            pop = resolve_version(self.store, self.cfg.popularity_model, None).version
        with contextlib.suppress(ArtifactError):
            knn = resolve_version(self.store, self.cfg.item_knn_model, None).version
        return ActiveVersions(r, rk, pop, knn)

    def _load_local(self, versions: ActiveVersions) -> _Sources:
        """Load everything the ingress itself needs for ``versions`` (blocking; run in a thread)."""
        self._ensure_retrieval(versions.retrieval)
        if versions.ranking:
            self._ensure_spec(versions.ranking)
        sources = _Sources()
        if versions.popularity:
            mv = self.store.get(self.cfg.popularity_model, versions.popularity)
            sources.popularity = PopularityCandidates(load_popularity(self.store, mv))
        if versions.item_knn:
            mv = self.store.get(self.cfg.item_knn_model, versions.item_knn)
            sources.item_knn = ItemKnnCandidates(load_item_knn(self.store, mv))
        return sources

    def _ensure_retrieval(self, version: str) -> RetrievalArtifacts:
        art = self._retrieval.get(version)
        if art is None:
            mv = resolve_version(self.store, self.cfg.retrieval_model, version)
            art = load_retrieval(self.store, mv, with_tower=True, mmap=True)
            self._retrieval = {**self._retrieval, version: art}
        return art

    def _ensure_spec(self, version: str) -> RankerSpec:
        spec = self._specs.get(version)
        if spec is None:
            mv = resolve_version(self.store, self.cfg.ranking_model, version)
            spec = load_ranker_spec(self.store, mv)
            self._specs = {**self._specs, version: spec}
        return spec

    def _build_explorer(self, sources: _Sources) -> ThompsonExplorer:
        cat = self.catalog
        new_ids = np.zeros(0, np.int64)
        if len(cat.index):
            newest = cat.newest_created_s()
            recent = np.zeros(len(cat.index), bool)
            if np.isfinite(newest):
                recent = np.nan_to_num(cat.created_at_s, nan=-np.inf) >= newest - self.cfg.new_item_days * 86_400
            untouched = np.zeros(len(cat.index), bool)
            if sources.popularity is not None:
                untouched = ~sources.popularity.has_interactions(cat.index.ids)
            new_ids = cat.index.ids[(recent | untouched) & cat.available]
        return ThompsonExplorer(new_ids, self.cfg.exploration_rate, self.cfg.exploration_seed)

    async def start(self) -> None:
        """Resolve and load the configured versions; shards/ranker load theirs in their constructors."""
        versions = self._resolve(self.cfg.retrieval_version, self.cfg.ranking_version)
        sources = await asyncio.to_thread(self._load_local, versions)
        self._sources = sources
        self.explorer = self._build_explorer(sources)
        self._cache_epoch = self._fingerprint(versions)
        self.active = versions
        self.metrics.set_versions(versions.as_dict())
        if self.cfg.reload_interval_s > 0 and self._reload_task is None:
            self._reload_task = asyncio.get_running_loop().create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reload_interval_s)
            try:
                await self.reload()
            except Exception as e:  # noqa: BLE001 - a bad promotion must never stop the poller
                log.warning("periodic reload failed, keeping current versions: %s", e)

    async def reload(self, retrieval_version: str | None = None, ranking_version: str | None = None) -> ReloadResponse:
        """Hot swap: load new versions everywhere first, then switch ``self.active`` in one assignment.

        Requests already running keep the versions they started with (each call names its
        version); old versions stay loaded on the shards until the next swap, so nothing in flight
        ever finds its version gone.
        """
        async with self._load_lock:
            previous = self.active
            retrieval_version = retrieval_version or self.cfg.retrieval_version
            ranking_version = ranking_version or self.cfg.ranking_version
            versions = self._resolve(retrieval_version, ranking_version)
            if previous == versions:
                return ReloadResponse(changed=False, model_versions=versions.as_dict(),
                                      previous=versions.as_dict())
            await asyncio.gather(*(s.call("load", versions.retrieval) for s in self.shards))
            if self.ranker is not None and versions.ranking:
                await self.ranker.call("load", versions.ranking)
            sources = await asyncio.to_thread(self._load_local, versions)
            explorer = self._build_explorer(sources)
            epoch = self._fingerprint(versions)
            # --- the swap: plain attribute writes, no await in between -> atomic for this event loop
            self._sources, self.explorer, self.active, self._cache_epoch = sources, explorer, versions, epoch
            self.metrics.set_versions(versions.as_dict())
            keep_r = sorted({versions.retrieval, previous.retrieval} if previous else {versions.retrieval})
            keep_k = sorted({v for v in (versions.ranking, previous.ranking if previous else None) if v})
            self._retrieval = {v: a for v, a in self._retrieval.items() if v in keep_r}
            await asyncio.gather(*(s.call("retain", keep_r) for s in self.shards), return_exceptions=True)
            if self.ranker is not None and keep_k:
                await asyncio.gather(self.ranker.call("retain", keep_k), return_exceptions=True)
            return ReloadResponse(changed=True, model_versions=versions.as_dict(),
                                  previous=previous.as_dict() if previous else {})

    def _fingerprint(self, versions: ActiveVersions) -> str:
        """Versions plus their store write times: a re-written version name never hits old cache entries."""
        parts = []
        for model, name in (("retrieval", self.cfg.retrieval_model), ("ranking", self.cfg.ranking_model),
                            ("popularity", self.cfg.popularity_model), ("item_knn", self.cfg.item_knn_model)):
            version = getattr(versions, model)
            created = ""
            if version:
                with contextlib.suppress(Exception):
                    created = str(self.store.get(name, version).metadata.get("created_at", ""))
            parts.append(f"{model}={version}@{created}")
        return request_shape_hash({"versions": parts})

    # ------------------------------------------------------------------ result cache
    async def _cache_lookup(self, state: _RequestState, user_id: int, variant: str, shape: str) -> CacheLookup:
        m = self.metrics
        if not self.cache.enabled:
            return CacheLookup(None, 0)
        with m.stage("cache", state.timings):
            lookup = await asyncio.to_thread(self.cache.get, user_id, variant, shape)
        (m.cache_hits if lookup.hit else m.cache_misses).inc()
        if lookup.error:
            m.cache_errors.inc()
        return lookup

    async def _cache_store(self, state: _RequestState, user_id: int, variant: str, shape: str,
                           lookup: CacheLookup, response: RecommendationResponse) -> None:
        """Only complete (non-degraded) answers are cached; awaited so a client's next call can hit it."""
        if not self.cache.enabled or response.degraded or lookup.error:
            return
        payload = response.model_dump(mode="json", exclude={"request_id", "cached"})
        with self.metrics.stage("cache", state.timings):
            await asyncio.to_thread(self.cache.put, user_id, variant, shape, lookup.generation, payload)

    def invalidate_user(self, user_id: int) -> bool:
        """A new event of the user: all their cached answers are stale (blocking; call in a thread)."""
        return self.cache.invalidate_user(user_id)

    def _enrich(self, items: list) -> None:
        for it, (title, genres) in zip(items, self.item_meta.lookup([it.item_id for it in items]), strict=True):
            it.title = title
            if not it.genres and genres:
                it.genres = genres

    @property
    def ready(self) -> bool:
        return self.active is not None

    # ------------------------------------------------------------------ helpers
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

    def _rerank_params(self, req: RecommendationRequest, choice: VariantChoice) -> RerankParams:
        d = self.cfg.rerank
        params = RerankParams(d.mmr_lambda, d.max_per_genre, d.genre_window, d.freshness_weight,
                              d.freshness_half_life_days)
        allowed = {"mmr_lambda", "max_per_genre", "genre_window", "freshness_weight", "freshness_half_life_days"}
        exp = {k: v for k, v in choice.reranking.items() if k in allowed}
        if exp:
            with contextlib.suppress(TypeError):
                params = replace(params, **exp)
        over = {k: v for k, v in req.diversity.model_dump(exclude_none=True).items() if k in allowed}
        return replace(params, **over) if over else params

    async def _remote(self, state: _RequestState, stage: str, reason: str, coro: Any, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        except Exception as e:  # noqa: BLE001 - any failure of a dependency degrades, never 500s
            log.warning("%s failed (%s): %s", stage, reason, e)
            self.metrics.stage_errors.labels(stage).inc()
            state.degrade(reason)
            return None

    def _embed(self, art: RetrievalArtifacts, user_id: int, history: list[int]) -> tuple[np.ndarray, bool]:
        import torch

        u = int(art.user_index.lookup([user_id])[0])
        L = art.history_length
        rows = art.item_index.lookup(history[:L]) if history else np.zeros(0, np.int64)
        rows = rows[rows >= 0]
        hist = np.full((1, L), -1, np.int64)
        hist[0, : len(rows)] = rows
        with torch.inference_mode():
            vec = art.user_tower(torch.tensor([u], dtype=torch.long), torch.from_numpy(hist))
        v = vec.reshape(1, -1).float().numpy()
        norm = np.linalg.norm(v)
        return (v / norm if norm > 0 else v).astype(np.float32), (u < 0 and len(rows) == 0)

    async def _scatter(self, state: _RequestState, vec: np.ndarray, k: int, version: str):
        calls = [
            self._remote(state, "retrieval", "retrieval_shard_unavailable", s.call("search", vec, k, version),
                         self.cfg.shard_timeout_s)
            for s in self.shards
        ]
        parts = [p for p in await asyncio.gather(*calls) if p is not None]
        rows, scores = merge_topk([(r[0], s[0]) for r, s in parts], k)
        return rows, scores

    def _item_vectors(self, art: RetrievalArtifacts, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = art.item_index.lookup(item_ids)
        emb = np.zeros((len(item_ids), art.dim), np.float32)
        known = rows >= 0
        if known.any():
            idx = rows[known]
            order = np.argsort(idx)  # sorted reads are friendlier to a memory-mapped matrix
            vals = np.asarray(art.item_embeddings[idx[order]], np.float32)
            tmp = np.empty_like(vals)
            tmp[order] = vals
            emb[known] = tmp
        return emb, rows

    # ------------------------------------------------------------------ recommend
    async def recommend(self, req: RecommendationRequest, request_id: str | None = None) -> RecommendationResponse:
        if self.active is None:
            raise NotReadyError("models are still loading")
        self._check_limits(req)
        t_start = time.perf_counter()
        state = _RequestState(request_id or uuid.uuid4().hex)
        m = self.metrics
        active = self.active
        sources = self._sources
        explorer = self.explorer

        choice = self.experiments.assign(req.user_id, req.context) if self.experiments.enabled else NO_EXPERIMENT
        r_version = choice.retrieval_version or active.retrieval
        k_version = choice.ranking_version or active.ranking
        ctx = current_request()
        if ctx is not None:  # the access log line reads these (same objects, filled in as we go)
            ctx.user_id, ctx.experiment, ctx.variant = req.user_id, choice.experiment, choice.variant
            ctx.timings, ctx.degraded = state.timings, state.degraded

        # 0. result cache: same user, variant, request shape and model versions -> the stored answer
        cache_variant = f"{choice.experiment}:{choice.variant}" if choice.experiment else "none"
        shape = request_shape_hash({"req": req.model_dump(mode="json", exclude={"user_id"}),
                                    "versions": [r_version, k_version], "epoch": self._cache_epoch})
        lookup = await self._cache_lookup(state, req.user_id, cache_variant, shape)
        if ctx is not None:
            ctx.cache = "hit" if lookup.hit else ("miss" if self.cache.enabled else "bypass")
        if lookup.hit:
            try:
                hit = RecommendationResponse.model_validate({**lookup.payload, "request_id": state.request_id,
                                                             "cached": True})
            except ValueError:
                hit = None
            if hit is not None:
                self.experiments.log_exposure(req.user_id, choice, state.request_id, [it.item_id for it in hit.items])
                if choice.experiment:
                    m.variant_requests.labels(choice.experiment, choice.variant or "").inc()
                m.stage_seconds.labels("total").observe(time.perf_counter() - t_start)
                if ctx is not None:
                    ctx.items = len(hit.items)
                return hit
        try:
            art = self._retrieval.get(r_version) or await asyncio.to_thread(self._ensure_retrieval, r_version)
        except ArtifactError:  # an experiment names a version that is not there: serve the default
            state.degrade("experiment_version_unavailable")
            r_version, art = active.retrieval, self._retrieval[active.retrieval]

        # 1. history: from the request, else the online store's recent items
        features_down = False
        history = list(req.history or [])
        if req.history is None:
            with m.stage("history", state.timings):
                try:
                    history = (await asyncio.to_thread(self.features.fetch, req.user_id, [])).recent_item_ids
                except FeatureStoreUnavailable:
                    features_down = True
                    state.degrade("feature_store_unavailable")
                except FeatureReadError:
                    state.degrade("feature_read_failed")

        # 2. user embedding once, then scatter-gather over shards + secondary sources
        with m.stage("embed", state.timings):
            vec, cold = self._embed(art, req.user_id, history)
        k = self.cfg.retrieval_k
        with m.stage("retrieval", state.timings):
            rows, ann_scores = await self._scatter(state, vec, k, r_version)
        with m.stage("candidates", state.timings):
            lists = [("ann", art.item_ids[rows], ann_scores)]
            if sources.item_knn is not None and history and self.cfg.knn_k:
                lists.append(("item_knn", *sources.item_knn.from_history(history, self.cfg.knn_k)))
            if sources.popularity is not None and self.cfg.popularity_k:
                lists.append(("popularity", *sources.popularity.top(self.cfg.popularity_k)))
            cands = merge_candidates(lists)
            cat_rows = self.catalog.rows(cands.item_ids)
            genres = [self.catalog.genres[r] if r >= 0 else frozenset() for r in cat_rows]
            spec = FilterSpec(
                exclude=frozenset(req.exclude),
                seen=frozenset(history) if req.filters.exclude_seen else frozenset(),
                available_only=req.filters.available_only,
                include_genres=frozenset(req.filters.include_genres),
                exclude_genres=frozenset(req.filters.exclude_genres),
            )
            keep = business_filter(cands.item_ids, genres, self.catalog.is_available(cat_rows), spec)
            cands = cands.subset(keep)
            cat_rows = cat_rows[keep]
            genres = [g for g, kp in zip(genres, keep, strict=True) if kp]
        m.candidates.observe(len(cands))
        if len(self.shards) and "retrieval_shard_unavailable" in state.degraded and len(cands) == 0:
            state.degrade("no_candidates")

        # 3. features (one batched read) + ranking
        emb, _ = self._item_vectors(art, cands.item_ids)
        retrieval_score = emb @ vec[0]
        scores = await self._score(state, req, cands, emb, retrieval_score, cold, k_version, features_down)

        # 4. re-rank
        params = self._rerank_params(req, choice)
        with m.stage("reranking", state.timings):
            created = np.where(cat_rows >= 0, self.catalog.created_at_s[np.clip(cat_rows, 0, None)]
                               if len(self.catalog.created_at_s) else np.nan, np.nan)
            now_s = self.catalog.newest_created_s()
            now_s = time.time() if not np.isfinite(now_s) else max(now_s, 0.0)
            rel = normalize(scores) + freshness_boost(created, now_s, params.freshness_weight,
                                                      params.freshness_half_life_days)
            order = mmr_select(rel, req.n, emb, genres, params)
        items = [
            RecommendedItem(item_id=int(cands.item_ids[i]), score=float(rel[i]), rank=0,
                            sources=list(cands.sources[i]), genres=sorted(genres[i]))
            for i in order
        ]

        # 5. exploration slot for brand-new items
        use_exploration = req.diversity.exploration is not False and explorer is not None
        if use_exploration and len(explorer.new_item_ids) and explorer.should_explore():
            pool = explorer.candidate_pool()
            prow = self.catalog.rows(pool)
            pgen = [self.catalog.genres[r] if r >= 0 else frozenset() for r in prow]
            ok = business_filter(pool, pgen, self.catalog.is_available(prow), spec)
            ok &= ~np.isin(pool, np.asarray([it.item_id for it in items], np.int64))
            pick = explorer.pick(pool[ok], rate=1.0)
            if pick is not None:
                slot = min(self.cfg.exploration_slot, len(items))
                new_item = RecommendedItem(item_id=pick, score=0.0, rank=0, sources=["exploration"],
                                           genres=sorted(self.catalog.genres_of(pick)))
                if len(items) >= req.n:
                    items.pop()
                items.insert(slot, new_item)
                explorer.record_impression(pick)
        for rank, it in enumerate(items):
            it.rank = rank

        versions = {"retrieval": r_version}
        if k_version:
            versions["ranking"] = k_version
        for name in ("popularity", "item_knn"):
            if getattr(active, name):
                versions[name] = getattr(active, name)
        self.experiments.log_exposure(req.user_id, choice, state.request_id, [it.item_id for it in items])
        if choice.experiment:
            m.variant_requests.labels(choice.experiment, choice.variant or "").inc()
        for reason in state.degraded:
            m.degraded.labels(reason).inc()
        self._enrich(items)
        response = RecommendationResponse(
            request_id=state.request_id,
            user_id=req.user_id,
            items=items,
            model_versions=versions,
            degraded=bool(state.degraded),
            degraded_reasons=state.degraded,
            cold_start=cold,
            experiment=choice.experiment,
            variant=choice.variant,
        )
        await self._cache_store(state, req.user_id, cache_variant, shape, lookup, response)
        m.stage_seconds.labels("total").observe(time.perf_counter() - t_start)
        if ctx is not None:
            ctx.items = len(items)
        return response

    async def _score(self, state: _RequestState, req: RecommendationRequest, cands: Candidates, emb: np.ndarray,
                     retrieval_score: np.ndarray, cold: bool, k_version: str | None, features_down: bool):
        m = self.metrics
        n = len(cands)
        if n == 0:
            return np.zeros(0, np.float32)
        pop = self._sources.popularity
        if cold:
            # cold start: popularity prior blended with content (context genres, else the generic embedding)
            pop_s = pop.normalized_scores(cands.item_ids) if pop is not None else np.zeros(n, np.float32)
            wanted = req.context.get("genres")
            if isinstance(wanted, list) and wanted:
                want = frozenset(str(g) for g in wanted)
                rows = self.catalog.rows(cands.item_ids)
                content = np.array([len(self.catalog.genres[r] & want) / len(want) if r >= 0 else 0.0
                                    for r in rows], np.float32)
            else:
                content = normalize(retrieval_score)
            w = self.cfg.cold_start_popularity_weight
            return w * pop_s + (1 - w) * content
        hydrated: HydratedFeatures | None = None
        if not features_down:
            with m.stage("hydration", state.timings):
                try:
                    hydrated = await asyncio.wait_for(
                        asyncio.to_thread(self.features.fetch, req.user_id, cands.item_ids.tolist()),
                        self.cfg.feature_timeout_s * 5,
                    )
                except (FeatureStoreUnavailable, TimeoutError):
                    state.degrade("feature_store_unavailable")
                except FeatureReadError:
                    state.degrade("feature_read_failed")
        if hydrated is None or self.ranker is None or not k_version:
            if self.ranker is None or not k_version:
                state.degrade("ranker_unavailable")
            return retrieval_score  # ranker fallback: retrieval similarity
        try:
            spec = self._specs.get(k_version) or await asyncio.to_thread(self._ensure_spec, k_version)
        except ArtifactError:
            state.degrade("ranker_unavailable")
            return retrieval_score
        dense, sparse = build_ranker_inputs(
            spec, user_id=req.user_id, item_ids=cands.item_ids, retrieval_scores=retrieval_score,
            feature_names=hydrated.names, item_features=hydrated.items, user_features=hydrated.user,
            context=req.context,
        )
        with m.stage("ranking", state.timings):
            scores = await self._remote(state, "ranking", "ranker_unavailable",
                                        self.ranker.call("score", dense, sparse, k_version), self.cfg.ranker_timeout_s)
        if scores is None or len(scores) != n:
            state.degrade("ranker_unavailable")
            return retrieval_score
        return np.asarray(scores, np.float32)

    # ------------------------------------------------------------------ similar items
    async def similar(self, item_id: int, n: int) -> SimilarItemsResponse:
        if self.active is None:
            raise NotReadyError("models are still loading")
        if n > self.cfg.limits.max_similar_n:
            raise RequestLimitError("n", f"n must be <= {self.cfg.limits.max_similar_n}")
        state = _RequestState(uuid.uuid4().hex)
        active, sources = self.active, self._sources
        art = self._retrieval[active.retrieval]
        row = int(art.item_index.lookup([item_id])[0])
        knn = sources.item_knn.similar(item_id, n) if sources.item_knn is not None else None
        if row < 0 and (knn is None or len(knn[0]) == 0):
            raise UnknownItemError(item_id)
        lists = []
        if row >= 0:
            vec = np.asarray(art.item_embeddings[row : row + 1], np.float32)
            rows, scores = await self._scatter(state, vec, n + 1, active.retrieval)
            lists.append(("ann", art.item_ids[rows], scores))
        if knn is not None:
            lists.append(("item_knn", *knn))
        cands = merge_candidates(lists)
        cands = cands.subset(cands.item_ids != item_id)
        if row >= 0:
            emb, _ = self._item_vectors(art, cands.item_ids)
            score = emb @ np.asarray(art.item_embeddings[row], np.float32)
        else:
            score = np.nan_to_num(cands.source_scores.get("item_knn", np.zeros(len(cands))))
        order = np.argsort(-score, kind="stable")[:n]
        versions = {"retrieval": active.retrieval}
        if active.item_knn:
            versions["item_knn"] = active.item_knn
        similar = [SimilarItem(item_id=int(cands.item_ids[i]), score=float(score[i]), sources=cands.sources[i])
                   for i in order]
        self._enrich(similar)
        ctx = current_request()
        if ctx is not None:
            ctx.timings, ctx.degraded, ctx.items = state.timings, state.degraded, len(similar)
        return SimilarItemsResponse(
            item_id=item_id,
            items=similar,
            model_versions=versions,
            degraded=bool(state.degraded),
            degraded_reasons=state.degraded,
        )

    # ------------------------------------------------------------------ events
    def record_event(self, event: dict[str, Any]) -> None:
        """Serving-side effects of an event: exploration posteriors and the experiment outcome log."""
        explorer = self.explorer
        if explorer is not None and event.get("event_type") in ("click", "purchase") and explorer.is_new(
            int(event["item_id"])
        ):
            explorer.record_click(int(event["item_id"]))
        value = event.get("rating") if event.get("event_type") == "rating" else 1.0
        self.experiments.log_outcome(int(event["user_id"]), str(event["event_type"]),
                                     float(value if value is not None else 1.0), int(event["item_id"]))
