"""Exploration: one slot for a brand-new item, picked by Thompson sampling on its click posterior."""

from __future__ import annotations

import numpy as np

from recsys.serving.artifacts import Catalog
from recsys.serving.config import ServingConfig
from recsys.serving.exploration import ThompsonExplorer
from recsys.serving.metrics import ServingMetrics
from recsys.serving.reranker import FilterSpec, business_filter
from recsys.serving.schemas import RecommendationRequest, RecommendedItem
from recsys.serving.stages.base import RequestState


class Exploration:
    name = "exploration"

    def __init__(self, cfg: ServingConfig, catalog: Catalog, metrics: ServingMetrics):
        self.cfg = cfg
        self.catalog = catalog
        self.metrics = metrics

    async def __call__(self, state: RequestState, req: RecommendationRequest, items: list[RecommendedItem],
                       explorer: ThompsonExplorer | None, filters: FilterSpec) -> list[RecommendedItem]:
        """Insert at most one new item at the configured slot (the request can opt out); ranks renumbered."""
        if req.diversity.exploration is not False and explorer is not None and len(explorer.new_item_ids) \
                and explorer.should_explore():
            with self.metrics.stage(self.name, state.timings):
                self._explore(items, req.n, explorer, filters)
        for rank, it in enumerate(items):
            it.rank = rank
        return items

    def _explore(self, items: list[RecommendedItem], n: int, explorer: ThompsonExplorer, filters: FilterSpec) -> None:
        cat = self.catalog
        pool = explorer.candidate_pool()
        rows = cat.rows(pool)
        genres = [cat.genres[r] if r >= 0 else frozenset() for r in rows]
        ok = business_filter(pool, genres, cat.is_available(rows), filters)
        ok &= ~np.isin(pool, np.asarray([it.item_id for it in items], np.int64))
        pick = explorer.pick(pool[ok], rate=1.0)
        if pick is None:
            return
        slot = min(self.cfg.exploration_slot, len(items))
        new_item = RecommendedItem(item_id=pick, score=0.0, rank=0, sources=["exploration"],
                                   genres=sorted(cat.genres_of(pick)))
        if len(items) >= n:
            items.pop()
        items.insert(slot, new_item)
        explorer.record_impression(pick)
