"""The Thompson slot logs the item's marginal propensity: over many decisions it matches how often it is shown.

Issue 23: the slot used to draw among a random pool (clicked items + 256 sampled new items) and log the pick
probability *given that pool*, which was not logged. With 1,000 new items an item was logged at about
1/pool size while it was shown far less often, so IPS weights were too small. This test runs the real
exploration stage (catalog, business filter, the stage's own propensity list) over many decisions with a
fixed posterior state and compares the shown frequency of each class of exchangeable items with the
propensities the stage returned (a chi-square test). On the old pooled code it fails by a wide margin.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from recsys.serving.config import ServingConfig
from recsys.serving.http.schemas import RecommendationRequest, RecommendedItem
from recsys.serving.models.artifacts import Catalog
from recsys.serving.pipeline.candidates.filters import FilterSpec, business_filter
from recsys.serving.pipeline.exploration.stage import Exploration
from recsys.serving.pipeline.exploration.thompson import ThompsonExplorer
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState

N_NEW = 1000
RANKED = [5000, 5001, 5002, 5003, 5004]


def _catalog() -> Catalog:
    ids = list(range(N_NEW)) + RANKED
    genres = ["Comedy" if i % 2 else "Drama" for i in ids]  # odd ids are filtered out by the request
    return Catalog.from_items(pd.DataFrame({"item_id": ids, "genres": genres}))


def _explorer() -> tuple[ThompsonExplorer, dict[int, str]]:
    """1,000 new items, 500 of them allowed by the filter, in 5 classes of exchangeable items."""
    ex = ThompsonExplorer(np.arange(N_NEW), rate=1.0, seed=3)
    clicked = {0: (2, 20), 2: (3, 25), 4: (1, 12)}  # item: (clicks, impressions)
    for item, (c, n) in clicked.items():
        for _ in range(n):
            ex.record_impression(item)
        for _ in range(c):
            ex.record_click(item)
    classes = {item: f"clicked {item}" for item in clicked}
    for item in range(6, N_NEW, 2):  # the eligible never-clicked items: two posteriors
        shown = 30 if item < 500 else 34
        for _ in range(shown):
            ex.record_impression(item)
        classes[item] = f"shown {shown}"
    for item in range(1, N_NEW, 2):  # filtered out: must never be shown
        ex.record_impression(item)
    return ex, classes


async def _decisions(stage: Exploration, ex: ThompsonExplorer, n: int) -> list[tuple[int, float]]:
    req = RecommendationRequest(user_id=1, n=len(RANKED))
    # the request's business filter over the new items, as the candidate stage applies it (CandidateSet.explore_pool)
    cat, pool = stage.catalog, ex.new_item_ids
    rows = cat.rows(pool)
    allowed = pool[business_filter(pool, cat.genres_at(rows), cat.is_available(rows),
                                   FilterSpec(exclude_genres=frozenset({"Comedy"})))]
    out = []
    for d in range(n):
        items = [RecommendedItem(item_id=i, score=1.0, rank=r, sources=["ann"]) for r, i in enumerate(RANKED)]
        items, props = await stage(RequestState(f"r{d}"), req, items, ex, allowed, {})
        slot = [k for k, it in enumerate(items) if "exploration" in it.sources]
        assert len(slot) == 1 and len(props) == len(items)
        item = items[slot[0]].item_id
        out.append((item, props[slot[0]]))
        ex._impressions[item] -= 1  # keep the posterior state fixed: every decision sees the same one
    return out


def test_thompson_slot_propensity_is_the_marginal_shown_frequency():
    cfg = ServingConfig(exploration_rate=1.0, exploration_slot=2)
    stage = Exploration(cfg, _catalog(), ServingMetrics())
    ex, classes = _explorer()
    n = 3000
    shown = asyncio.run(_decisions(stage, ex, n))
    counts: dict[str, int] = {}
    logged: dict[str, list[float]] = {}
    for item, p in shown:
        assert item in classes, f"item {item} is not eligible"
        counts[classes[item]] = counts.get(classes[item], 0) + 1
        logged.setdefault(classes[item], []).append(p)
    size = {c: sum(1 for k in classes.values() if k == c) for c in set(classes.values())}
    # E[count of a class] = n * (class size) * (marginal propensity of one member); each logged value is
    # an unbiased estimate of that propensity, independent of which item was picked
    expected = {c: n * size[c] * float(np.mean(v)) for c, v in logged.items()}
    assert all(counts[c] >= 30 for c in counts), counts  # every class is exercised
    obs = np.array([counts[c] for c in counts], float)
    exp = np.array([expected[c] for c in counts])
    assert abs(exp.sum() / n - 1) < 0.05, (expected, counts)  # the propensities of all items sum to 1
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    p_value = float(stats.chi2.sf(chi2, len(obs) - 1))
    assert p_value > 1e-3, (chi2, counts, expected)


def test_slot_arms_group_exchangeable_items_and_propensities_sum_to_one():
    from recsys.serving.pipeline.exploration.thompson import SlotArms

    eligible = np.array([3, 7, 9, 11, 20, 21])
    clicks = np.array([0, 2, 0, 0, 0, 0], float)
    shown = np.array([0, 5, 4, 0, 4, 9], float)
    arms = SlotArms.build(eligible, clicks, shown)
    assert arms.clicked.tolist() == [7]
    assert [g.tolist() for g in arms.groups] == [[3, 11], [9, 20], [21]]
    assert arms.group_b.tolist() == [1.0, 5.0, 10.0]
    rng = np.random.default_rng(0)
    per_item = [arms.propensity(rng, col, 4000) * arms.size(col) for col in range(arms.columns)]
    assert sum(per_item) == pytest.approx(1.0, abs=0.02)
    one = SlotArms.build(np.array([5, 6]), np.zeros(2), np.zeros(2))
    assert one.columns == 1 and one.propensity(rng, 0, 10) == 0.5
