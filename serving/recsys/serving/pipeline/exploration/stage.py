"""Exploration: one slot for a brand-new item, by Thompson sampling or (per variant) LinUCB, with propensities.

The variant's parameters choose the policy (``exploration: thompson | linucb``) and the share of
requests given the slot (``exploration_rate``, capped by ``exploration_max_rate``). Every shown item
gets a propensity: the probability that this policy shows it in this response (see
:func:`recsys.serving.pipeline.exploration.thompson.slate_propensities`; the slot's item: rate x its pick probability),
which goes to the exposure log for off-policy evaluation. Both policies choose among *all* eligible new
items (no sampled pool), so the pick probability is the marginal one, not one conditional on a hidden draw.

Eligible means: through the request's business filters, which the candidate stage applied to the new items
in the same pass as the candidates (``CandidateSet.explore_pool``), and not already on the slate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.http.schemas import RecommendationRequest, RecommendedItem
from recsys.serving.models.artifacts import Catalog
from recsys.serving.pipeline.exploration.linucb import LinUCB, features, user_profile
from recsys.serving.pipeline.exploration.reward_queue import RewardQueue
from recsys.serving.pipeline.exploration.thompson import (
    ThompsonExplorer,
    exploration_policy,
    exploration_rate,
    slate_propensities,
)
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState

log = logging.getLogger(__name__)


class Exploration:
    name = "exploration"

    def __init__(self, cfg: ServingConfig, catalog: Catalog, metrics: ServingMetrics, live: Any = None):
        self.cfg = cfg
        self.catalog = catalog
        self.metrics = metrics
        self.live = live  # LiveCatalog: content vectors for LinUCB's features
        self._linucb: LinUCB | None = None
        self.rewards = RewardQueue(self._apply_reward, on_drop=metrics.linucb_rewards_dropped.inc)

    def close(self) -> None:
        """Stop the reward worker and close LinUCB's Redis client (the service is being replaced)."""
        self.rewards.close()
        if self._linucb is not None:
            self._linucb.close()

    @property
    def linucb(self) -> LinUCB:
        """Created on first use, so deployments that never run a LinUCB variant never touch its Redis keys."""
        if self._linucb is None:
            self._linucb = LinUCB(self.cfg.redis_url, self.cfg.linucb, seed=self.cfg.exploration_seed)
        return self._linucb

    async def __call__(self, state: RequestState, req: RecommendationRequest, items: list[RecommendedItem],
                       explorer: ThompsonExplorer | None, allowed: np.ndarray, params: dict[str, Any] | None = None,
                       history: list[int] | None = None) -> tuple[list[RecommendedItem], list[float]]:
        """Insert at most one new item at the configured slot (the request can opt out); ranks renumbered.

        ``allowed``: the explorer's new items that pass this request's business filters (the candidate
        stage's ``CandidateSet.explore_pool``). Returns the items and one propensity per item.
        """
        params = params or {}
        rate = exploration_rate(params, self.cfg.exploration_rate, self.cfg.exploration_max_rate)
        eligible = req.diversity.exploration is not False and explorer is not None and len(explorer.new_item_ids) > 0
        slot_rate = rate if eligible else 0.0
        props = list(slate_propensities(len(items), slot_rate, len(items) >= req.n).tolist())
        if eligible and explorer.should_explore(rate):
            with self.metrics.stage(self.name, state.timings):
                policy = exploration_policy(params)
                picked = await self._explore(state, req, items, explorer, allowed, policy, history or [])
            if picked is not None:
                slot, prob = picked
                if len(props) >= req.n:
                    props.pop()
                props.insert(slot, rate * prob)
            elif props:
                props[-1] = 1.0  # nothing eligible to explore with: the last item could not be displaced
        for rank, it in enumerate(items):
            it.rank = rank
        return items, props

    @staticmethod
    def _pool(items: list[RecommendedItem], allowed: np.ndarray) -> np.ndarray:
        """Every new item this request may show: the whole filtered set less the slate, never a random sample.

        A sampled pool would be hidden randomness the logged propensity cannot account for (issue 23).
        """
        return allowed[~np.isin(allowed, np.asarray([it.item_id for it in items], np.int64))]

    async def _explore(self, state: RequestState, req: RecommendationRequest, items: list[RecommendedItem],
                       explorer: ThompsonExplorer, allowed: np.ndarray, policy: str,
                       history: list[int]) -> tuple[int, float] | None:
        pool = self._pool(items, allowed)
        content = self.live.content if self.live is not None else None
        if policy == "linucb" and content is not None:
            picked = await self._linucb_pick(state, req.user_id, pool, history, content)
        else:
            picked = explorer.pick_with_propensity(pool)
            if picked is not None:
                explorer.record_impression(picked[0])
        if picked is None:
            return None
        pick, prob = picked
        slot = min(self.cfg.exploration_slot, len(items))
        sources = ["exploration"] if policy == "thompson" else ["exploration", policy]
        new_item = RecommendedItem(item_id=pick, score=0.0, rank=0, sources=sources,
                                   genres=sorted(self.catalog.genres_of(pick)))
        if len(items) >= req.n:
            items.pop()
        items.insert(slot, new_item)
        return slot, prob

    async def _linucb_pick(self, state: RequestState, user_id: int, pool: np.ndarray, history: list[int],
                           content: Any) -> tuple[int, float] | None:
        model = self.linucb
        dims = model.cfg.content_dims
        if len(pool) == 0:
            return None
        hist_vecs, known = content.vectors(history[:20])
        profile = user_profile(hist_vecs, known, dims)
        x = features(profile, content.vectors(pool)[0], dims)
        try:
            await asyncio.to_thread(model.refresh)
            pick, prob = model.pick(pool, x)
            row = int(np.flatnonzero(pool == pick)[0])
            await asyncio.to_thread(model.record_impression, user_id, pick, x[row])
        except Exception as e:  # noqa: BLE001 - Redis down: no LinUCB slot this time, never a 500
            log.warning("linucb exploration unavailable: %s", e)
            state.degrade("exploration_state_unavailable")
            return None
        return pick, prob

    def record_click(self, user_id: int, item_id: int) -> bool:
        """A click/purchase: LinUCB's reward for the impression it parked, queued (never blocks the loop).

        The Redis call runs in :class:`RewardQueue`'s worker thread; False when there is no LinUCB
        state in this replica or the queue is full (the drop is counted).
        """
        if self._linucb is None:
            return False
        return self.rewards.submit(user_id, item_id, 1.0)

    def _apply_reward(self, user_id: int, item_id: int, reward: float) -> bool:
        return self.linucb.record_reward(user_id, item_id, reward)
