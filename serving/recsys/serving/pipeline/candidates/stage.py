"""Candidate generation: user embedding, sharded ANN scatter-gather, secondary sources, business filters.

    embed user (TorchScript tower, once) ─┬─> retrieval shards (scatter-gather, merge top-K) ─┐
                                          ├─> item-kNN from recent history ──────────────────┼─> merge + de-dup
                                          ├─> SASRec from the recent sequence ───────────────┤
                                          ├─> content neighbours of recent history (metadata) ┤      │
                                          └─> popularity ────────────────────────────────────┘      │
                                                                                  business filters ─┘

Items the retrieval model has no embedding for (posted after its training) get one borrowed from
their content neighbours (:func:`recsys.serving.pipeline.candidates.content_index.borrow_embeddings`), so scoring and
MMR treat them like any other candidate. The output carries everything later stages need (item
vectors, retrieval scores, catalog rows, genres, the filter), so no later stage touches the
retrieval artifacts again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.platform.ranking_features import CONTENT_RECENT_ITEMS, recent_distinct
from recsys.serving.config import ServingConfig
from recsys.serving.http.schemas import RecommendationRequest
from recsys.serving.models.artifacts import Catalog, RetrievalArtifacts
from recsys.serving.models.bundle import Sources
from recsys.serving.pipeline.candidates.ann import merge_topk
from recsys.serving.pipeline.candidates.content_index import borrow_embeddings
from recsys.serving.pipeline.candidates.filters import FilterSpec, business_filter
from recsys.serving.pipeline.candidates.shard_client import ShardClient
from recsys.serving.pipeline.candidates.sources import Candidates, merge_candidates
from recsys.serving.pipeline.metrics import ServingMetrics
from recsys.serving.pipeline.state import RequestState, Target, guarded


@dataclass
class CandidateSet:
    """The filtered candidates of one request plus what scoring and re-ranking read."""

    cands: Candidates
    cat_rows: np.ndarray
    genres: list[frozenset[str]]
    emb: np.ndarray  # (n, dim) item vectors of the candidates in the retrieval space
    retrieval_score: np.ndarray  # emb @ user vector
    user_vec: np.ndarray  # (1, dim), L2-normalised
    cold: bool  # the user is unknown to the tower and has no usable history
    history: tuple[int, ...] = ()  # the user's recent items, most recent first (ranker cross features)
    # the new items the exploration slot may insert, already through this request's business filters
    explore_pool: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    art: RetrievalArtifacts | None = None  # the retrieval version the candidates came from (item vectors)
    content: Any = None  # the live content index the content source searched (ranker's content scores)

    def __len__(self) -> int:
        return len(self.cands)


def embed_user(art: RetrievalArtifacts, user_id: int, history: list[int]) -> tuple[np.ndarray, bool]:
    """(L2-normalised user vector (1, dim), cold) from the user tower and the recent history."""
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


def unseen_top(ids: np.ndarray, scores: np.ndarray, seen: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of a source's (best-first) list that the user has not seen."""
    ids = np.asarray(ids, np.int64)
    if len(seen):
        keep = ~np.isin(ids, seen)
        ids, scores = ids[keep], np.asarray(scores)[keep]
    return ids[:k], scores[:k]


def fill_from_content(emb: np.ndarray, art: RetrievalArtifacts, item_ids: np.ndarray, content: Any) -> None:
    """Borrowed vectors for the rows of ``emb`` whose item the retrieval model does not know (in place)."""
    missing = np.flatnonzero(art.item_index.lookup(item_ids) < 0)
    if len(missing):
        vecs, found = borrow_embeddings(content, item_ids[missing], art.item_index, art.item_embeddings)
        emb[missing[found]] = vecs[found]


class ShardedRetrieval:
    """Scatter one query vector to every shard, gather their top-k, merge; a shard failure degrades.

    Each shard is reached through a :class:`ShardClient`, which folds concurrent requests' queries into one
    remote call per shard (shard_client.py).
    """

    name = "retrieval"

    def __init__(self, cfg: ServingConfig, shards: list[Target], metrics: ServingMetrics):
        self.cfg = cfg
        self.shards = shards
        self.clients = [ShardClient(s) for s in shards]
        self.metrics = metrics

    async def __call__(self, state: RequestState, vec: np.ndarray, k: int, version: str):
        calls = [
            guarded(self.metrics, state, self.name, "retrieval_shard_unavailable", c.search(vec, k, version),
                    self.cfg.shard_timeout_s)
            for c in self.clients
        ]
        parts = [p for p in await asyncio.gather(*calls) if p is not None]
        return merge_topk([(r[0], s[0]) for r, s in parts], k)


class CandidateGeneration:
    """All candidate sources for one request, merged and filtered by the business rules."""

    name = "candidates"

    def __init__(self, cfg: ServingConfig, catalog: Catalog, retrieval: ShardedRetrieval, metrics: ServingMetrics,
                 live: Any = None):
        self.cfg = cfg
        self.catalog = catalog
        self.retrieval = retrieval
        self.metrics = metrics
        self.live = live  # LiveCatalog: its content index (None until built, or without a catalog)

    async def __call__(self, state: RequestState, req: RecommendationRequest, art: RetrievalArtifacts,
                       version: str, history: list[int], sources: Sources,
                       seen: np.ndarray | None = None, new_items: np.ndarray | None = None) -> CandidateSet:
        """``seen``: the user's online already-seen set (with ``exclude_seen``, removed from every source
        *before* its top-k is taken, as the offline evaluator does, so each source still yields its k).

        ``new_items``: the new items the exploration slot may insert (the bundle explorer's, None when the
        request opts out). They go through the same business-filter pass as the candidates, so the rule runs
        once per request, here, and the exploration stage reads the result (``CandidateSet.explore_pool``).
        """
        m, cfg = self.metrics, self.cfg
        history = recent_distinct(history, len(history)).tolist()  # training order: distinct items, most recent first
        banned = np.zeros(0, np.int64)
        if req.filters.exclude_seen:
            banned = np.concatenate([np.asarray(history, np.int64), np.asarray(seen if seen is not None else [],
                                                                                  np.int64)])
        extra = min(len(banned), cfg.seen_overfetch)  # ids may repeat: an upper bound of what the filter drops
        with m.stage("embed", state.timings):
            vec, cold = embed_user(art, req.user_id, history)
        with m.stage(self.retrieval.name, state.timings):
            rows, ann_scores = await self.retrieval(state, vec, cfg.retrieval_k + extra, version)
        with m.stage(self.name, state.timings):
            lists = [("ann", *unseen_top(art.item_ids[rows], ann_scores, banned, cfg.retrieval_k))]

            def take(name: str, k: int, top: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> None:
                """Source ``name``'s top-``k`` among unseen items (``top(n)`` gives its best ``n``)."""
                lists.append((name, *unseen_top(*top(k + extra), banned, k)))

            content = self.live.content if self.live is not None else None
            active = sources.active()  # the registry's sources, history ones first (registry.py)
            for spec, src in active:
                if spec.needs_history and history and spec.k:
                    take(spec.item_tag, spec.k, lambda n, src=src: src.candidates(history, n))
            if content is not None and history and cfg.content_k:
                take("content", cfg.content_k, lambda n: content.from_history(history[:CONTENT_RECENT_ITEMS], n))
            for spec, src in active:
                if not spec.needs_history and spec.k:
                    take(spec.item_tag, spec.k, lambda n, src=src: src.candidates(history, n))
            cands = merge_candidates(lists)
            n = len(cands)
            pool = np.asarray(new_items if new_items is not None else [], np.int64)
            ids = np.concatenate([cands.item_ids, pool]) if len(pool) else cands.item_ids
            cat_rows = self.catalog.rows(ids)
            genres = self.catalog.genres_at(cat_rows)  # row -1 (not in the catalog) picks the trailing empty set
            spec = FilterSpec(
                exclude=frozenset(req.exclude),
                seen=banned if len(banned) else None,
                available_only=req.filters.available_only,
                include_genres=frozenset(req.filters.include_genres),
                exclude_genres=frozenset(req.filters.exclude_genres),
            )
            keep = business_filter(ids, genres, self.catalog.is_available(cat_rows), spec)
            explore_pool = pool[keep[n:]]
            keep = keep[:n]
            cands = cands.subset(keep)
            cat_rows = cat_rows[:n][keep]
            genres = genres[:n][keep]
            emb = art.vectors(cands.item_ids)
            if content is not None:
                fill_from_content(emb, art, cands.item_ids, content)
        m.candidates.observe(len(cands))
        if self.retrieval.shards and "retrieval_shard_unavailable" in state.degraded and len(cands) == 0:
            state.degrade("no_candidates")
        return CandidateSet(cands, cat_rows, genres, emb, emb @ vec[0], vec, cold, history=tuple(history),
                            explore_pool=explore_pool, art=art, content=content if cfg.content_k else None)
