"""One cache-miss request, traced: each stage module is entered once, in pipeline order, and by no other stage.

docs/serving.md ("One cache-miss request, file by file") lists the walk of POST /v1/recommendations; issue 25
asks that it visit each file at most once on the way in and that no stage call another. This test runs a real
in-process request (real Redis, the test store's models, the ranker scoring, the exploration slot on) under
``sys.setprofile`` and records every *entry* into a stage module: a function called from outside that
module (a coroutine resumed after an await is not an entry; protocol methods of a stage's output type,
such as ``len(cset)``, are reads of that output, not visits). It fails when the service calls a stage twice
(e.g. the seen set fetched from the history stage again after it returned, or the scoring stage asked
whether it will rank before hydration), when a stage calls another stage, and when the business filter
runs anywhere but inside the candidate stage.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import FrameType

import recsys.serving

ROOT = Path(recsys.serving.__file__).resolve().parent
STAGES = {  # module -> stage, for the modules that hold a stage class
    "pipeline/cache/stage.py": "cache",
    "pipeline/features/history.py": "history",
    "pipeline/candidates/stage.py": "candidates",
    "pipeline/features/stage.py": "hydration",
    "pipeline/scoring/stage.py": "scoring",
    "pipeline/reranking/stage.py": "reranking",
    "pipeline/exploration/stage.py": "exploration",
}
FILTERS = "pipeline/candidates/filters.py"


def _module(frame: FrameType | None) -> str | None:
    if frame is None:
        return None
    path = Path(frame.f_code.co_filename)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else None


def _stack_stages(frame: FrameType | None) -> list[str]:
    """The stage modules on ``frame``'s call chain (innermost first)."""
    out = []
    while frame is not None:
        mod = _module(frame)
        if mod in STAGES:
            out.append(STAGES[mod])
        frame = frame.f_back
    return out


def trace_request(service, request) -> tuple[list[str], list[tuple[str, list[str]]], list[list[str]], object]:
    """(stage visits in order, entries of a stage made from inside another stage, the stage stacks of each
    business-filter call, the response) for one ``service.recommend(request)``."""
    entries: list[str] = []
    nested: list[tuple[str, list[str]]] = []
    filter_calls: list[list[str]] = []
    started: list[FrameType] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        mod = _module(frame)
        if mod == FILTERS and frame.f_code.co_name == "business_filter":
            filter_calls.append(_stack_stages(frame.f_back))
        if mod not in STAGES or _module(frame.f_back) == mod:
            return
        if any(frame is f for f in started):  # a coroutine resumed after an await
            return
        started.append(frame)
        name = frame.f_code.co_name
        if name.startswith("__") and name != "__call__":  # e.g. CandidateSet.__len__: reading an output
            return
        entries.append(STAGES[mod])
        outer = [s for s in _stack_stages(frame.f_back) if s != STAGES[mod]]
        if outer:
            nested.append((f"{STAGES[mod]}.{name}", outer))

    async def run():
        sys.setprofile(profile)
        try:
            return await service.recommend(request)
        finally:
            sys.setprofile(None)

    response = asyncio.run(run())
    visits = [s for i, s in enumerate(entries) if i == 0 or entries[i - 1] != s]
    return visits, nested, filter_calls, response


def test_a_cache_miss_request_enters_each_stage_once_in_order(serving_args):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**{**serving_args, "exploration_rate": 1.0, "exploration_slot": 2})
    service = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                    Ranker(cfg))
    asyncio.run(service.start())
    items = [int(i) for i in service.catalog.index.ids[:6]]
    request = RecommendationRequest(user_id=4242, n=8, history=items)  # history: the item-kNN source runs
    visits, nested, filter_calls, response = trace_request(service, request)
    assert response.ranking == "ranker" and not response.cached  # every stage ran, hydration included
    assert any("exploration" in it.sources for it in response.items)  # the slot inserted an item
    # on the way in, each stage once and in this order; the answer is stored on the way out
    assert visits == ["cache", "history", "candidates", "hydration", "scoring", "reranking", "exploration",
                      "cache"], visits
    assert nested == [], nested  # no stage entered another stage
    # the business rule ran once, inside the candidate stage (candidates and the slot's new items together)
    assert filter_calls == [["candidates"]], filter_calls
