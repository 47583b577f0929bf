"""Scoring: the ranker on hydrated features, or a fallback that still gives a sensible order.

    cold user           -> popularity prior blended with content (context genres, else the generic embedding)
    features or ranker  -> retrieval similarity (the order the retriever chose), with a degraded reason
      unavailable          (no ranker promoted - e.g. the promotion gate refused every one - included)
    otherwise           -> the ranker deployment's scores (batched across requests there)

The mode lands in ``state.ranking`` (the response's ``"ranking"`` field: ranker | retrieval_only |
cold_start) and in ``recsys_ranking_mode_total``; ``recsys_ranker_active`` says whether a ranker is loaded.
"""

from __future__ import annotations

import asyncio

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.http.schemas import RecommendationRequest
from recsys.serving.models.artifacts import ArtifactError, Catalog
from recsys.serving.models.bundle import BundleLoader, Sources
from recsys.serving.pipeline.candidates.stage import CandidateSet
from recsys.serving.pipeline.features.client import HydratedFeatures
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.reranking.rules import normalize
from recsys.serving.pipeline.scoring.inputs import (
    build_ranker_inputs,
    cross_inputs,
    ranker_will_score,
    recent_items_for_similarity,
)
from recsys.serving.pipeline.state import RequestState, Target, guarded


class Scoring:
    name = "ranking"

    def __init__(self, cfg: ServingConfig, catalog: Catalog, ranker: Target | None, loader: BundleLoader,
                 metrics: ServingMetrics):
        self.cfg = cfg
        self.catalog = catalog
        self.ranker = ranker
        self.loader = loader
        self.metrics = metrics

    def cold_start(self, req: RecommendationRequest, cset: CandidateSet, sources: Sources) -> np.ndarray:
        n = len(cset)
        pop = sources.popularity
        pop_s = pop.normalized_scores(cset.cands.item_ids) if pop is not None else np.zeros(n, np.float32)
        wanted = req.context.get("genres")
        if isinstance(wanted, list) and wanted:
            want = frozenset(str(g) for g in wanted)
            content = np.array([len(g & want) / len(want) for g in cset.genres], np.float32)
        else:
            content = normalize(cset.retrieval_score)
        w = self.cfg.cold_start_popularity_weight
        return w * pop_s + (1 - w) * content

    async def __call__(self, state: RequestState, req: RecommendationRequest, cset: CandidateSet,
                       version: str | None, hydrated: HydratedFeatures | None, sources: Sources) -> np.ndarray:
        """``hydrated``: the candidates' online features the service read (None: not read or unavailable)."""
        scores = await self._score(state, req, cset, version, hydrated, sources)
        if state.ranking != "ranker" or len(cset) == 0:
            state.ranking = "cold_start" if cset.cold and len(cset) else "retrieval_only"
        self.metrics.ranking_mode.labels(state.ranking).inc()
        return scores

    async def _score(self, state: RequestState, req: RecommendationRequest, cset: CandidateSet,
                     version: str | None, hydrated: HydratedFeatures | None, sources: Sources) -> np.ndarray:
        state.ranking = "retrieval_only"  # until the ranker has answered
        n = len(cset)
        if n == 0:
            return np.zeros(0, np.float32)
        if cset.cold:
            return self.cold_start(req, cset, sources)
        fallback = cset.retrieval_score
        if not ranker_will_score(n, cset.cold, self.ranker, version):
            # no ranker promoted (e.g. the promotion gate refused every version): retrieval order is the
            # intended answer, reported as ranking="retrieval_only", not as a failed dependency
            return fallback
        if hydrated is None:
            return fallback
        try:
            spec = self.loader.cached_spec(version) or await asyncio.to_thread(self.loader.spec, version)
        except ArtifactError:
            state.degrade("ranker_unavailable")
            return fallback
        recent = cset.art.vectors(recent_items_for_similarity(cset.history)) if cset.art is not None else None
        cross = cross_inputs(cset.history, cset.cands.item_ids, cset.emb, recent, sources,
                             content=cset.content, wanted=spec.dense)
        dense, sparse = build_ranker_inputs(
            spec, user_id=req.user_id, item_ids=cset.cands.item_ids, retrieval_scores=cset.retrieval_score,
            feature_names=hydrated.names, item_features=hydrated.items, user_features=hydrated.user,
            context=req.context, cross=cross,
        )
        with self.metrics.stage(self.name, state.timings):
            scores = await guarded(self.metrics, state, self.name, "ranker_unavailable",
                                   self.ranker.call("score", dense, sparse, version), self.cfg.ranker_timeout_s)
        if scores is None or len(scores) != n:
            state.degrade("ranker_unavailable")
            return fallback
        state.ranking = "ranker"
        return np.asarray(scores, np.float32)
