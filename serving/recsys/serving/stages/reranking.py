"""Re-ranking: relevance (+ freshness) -> MMR diversity with genre caps, under the variant's parameters."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import numpy as np

from recsys.serving.artifacts import Catalog
from recsys.serving.config import ServingConfig
from recsys.serving.experiment_client import VariantChoice
from recsys.serving.metrics import ServingMetrics
from recsys.serving.reranker import RerankParams, freshness_boost, mmr_select, normalize
from recsys.serving.schemas import RecommendationRequest, RecommendedItem
from recsys.serving.stages.base import RequestState
from recsys.serving.stages.candidates import CandidateSet

RERANK_FIELDS = ("mmr_lambda", "max_per_genre", "genre_window", "freshness_weight", "freshness_half_life_days")


class Reranking:
    name = "reranking"

    def __init__(self, cfg: ServingConfig, catalog: Catalog, metrics: ServingMetrics):
        self.cfg = cfg
        self.catalog = catalog
        self.metrics = metrics

    def params(self, req: RecommendationRequest, choice: VariantChoice) -> RerankParams:
        """Config defaults, then the experiment variant's values, then the request's own overrides."""
        d = self.cfg.rerank
        params = RerankParams(d.mmr_lambda, d.max_per_genre, d.genre_window, d.freshness_weight,
                              d.freshness_half_life_days)
        exp = {k: v for k, v in choice.reranking.items() if k in RERANK_FIELDS}
        if exp:
            with contextlib.suppress(TypeError):
                params = replace(params, **exp)
        over = {k: v for k, v in req.diversity.model_dump(exclude_none=True).items() if k in RERANK_FIELDS}
        return replace(params, **over) if over else params

    async def __call__(self, state: RequestState, req: RecommendationRequest, cset: CandidateSet,
                       scores: np.ndarray, params: RerankParams) -> list[RecommendedItem]:
        cat = self.catalog
        with self.metrics.stage(self.name, state.timings):
            rows = cset.cat_rows
            created = np.where(rows >= 0, cat.created_at_s[np.clip(rows, 0, None)]
                               if len(cat.created_at_s) else np.nan, np.nan)
            now_s = cat.newest_created_s()
            now_s = time.time() if not np.isfinite(now_s) else max(now_s, 0.0)
            rel = normalize(scores) + freshness_boost(created, now_s, params.freshness_weight,
                                                      params.freshness_half_life_days)
            order = mmr_select(rel, req.n, cset.emb, cset.genres, params)
            ids = cset.cands.item_ids
            return [
                RecommendedItem(item_id=int(ids[i]), score=float(rel[i]), rank=0, sources=list(cset.cands.sources[i]),
                                genres=sorted(cset.genres[i]))
                for i in order
            ]
