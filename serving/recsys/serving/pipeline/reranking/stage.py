"""Re-ranking: relevance (+ freshness) -> MMR diversity with genre caps, under the variant's parameters."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from recsys.experiments.variant_params import RERANKING_FIELDS, RerankingParams
from recsys.serving.config import ServingConfig
from recsys.serving.http.schemas import RecommendationRequest, RecommendedItem
from recsys.serving.models.artifacts import Catalog
from recsys.serving.pipeline.candidates.stage import CandidateSet
from recsys.serving.pipeline.experiments import VariantChoice
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.reranking.rules import RerankParams, freshness_boost, mmr_select, normalize
from recsys.serving.pipeline.state import RequestState


class Reranking:
    name = "reranking"

    def __init__(self, cfg: ServingConfig, catalog: Catalog, metrics: ServingMetrics):
        self.cfg = cfg
        self.catalog = catalog
        self.metrics = metrics
        self._newest_s = catalog.newest_created_s()  # a scan of the whole catalog: once, not per request

    def params(self, req: RecommendationRequest, choice: VariantChoice) -> RerankParams:
        """Config defaults, then the experiment variants' values (all layers, resolved), then the request's.

        The variants' values were validated against `RerankingParams` when the experiment config was
        loaded (an unknown name or a wrong type fails `recsys experiments validate` and the router's
        load), so nothing here can turn a bad config into a 500 or into a silently ignored knob.
        """
        defaults = self.cfg.rerank.model_dump()
        merged = RerankingParams.model_validate(choice.reranking).apply(defaults)
        params = RerankParams(**{k: merged[k] for k in RERANKING_FIELDS})
        over = {k: v for k, v in req.diversity.model_dump(exclude_none=True).items() if k in RERANKING_FIELDS}
        return replace(params, **over) if over else params

    async def __call__(self, state: RequestState, req: RecommendationRequest, cset: CandidateSet,
                       scores: np.ndarray, params: RerankParams) -> list[RecommendedItem]:
        cat = self.catalog
        with self.metrics.stage(self.name, state.timings):
            rows = cset.cat_rows
            created = np.where(rows >= 0, cat.created_at_s[np.clip(rows, 0, None)]
                               if len(cat.created_at_s) else np.nan, np.nan)
            now_s = time.time() if not np.isfinite(self._newest_s) else max(self._newest_s, 0.0)
            rel = normalize(scores) + freshness_boost(created, now_s, params.freshness_weight,
                                                      params.freshness_half_life_days)
            order = mmr_select(rel, req.n, cset.emb, cset.genres, params)
            ids = cset.cands.item_ids
            return [
                RecommendedItem(item_id=int(ids[i]), score=float(rel[i]), rank=0, sources=cset.cands.sources_of(i),
                                genres=sorted(cset.genres[i]))
                for i in order
            ]
