"""Re-ranking: freshness boost, MMR diversity and genre caps (business filters: ``pipeline/candidates/filters.py``).

Pure numpy on a few hundred candidates, so it runs inside the ingress replica (a separate
deployment would add a network hop that costs more than the work). Everything is a function of
(candidates, scores, item metadata, :class:`RerankParams`), testable without Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import make_dataclass

import numpy as np

from recsys.experiments.variant_params import RerankDefaults

SECONDS_PER_DAY = 86_400.0


RerankParams = make_dataclass(
    "RerankParams", [(name, f.annotation, f.default) for name, f in RerankDefaults.model_fields.items()],
    frozen=True, namespace={"__module__": __name__})
"""The resolved knobs of one request (a plain frozen dataclass: built per request, no validation cost),
derived from :class:`recsys.experiments.variant_params.RerankDefaults`, where each knob is declared once."""


def normalize(scores: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] so boosts and MMR weights mean the same for logits and cosines."""
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        return s.astype(np.float32)
    lo, hi = s.min(), s.max()  # NaN-propagating and ~10x cheaper than nanmin/nanmax: their answer only on a NaN
    if lo != lo or hi != hi:
        lo, hi = np.nanmin(s), np.nanmax(s)
    if not np.isfinite(lo) or hi - lo < 1e-12:
        return np.ones(len(s), np.float32)
    out = (s - lo) / (hi - lo)
    if not np.isfinite(out).all():  # NaN scores (or an infinite span) only: the rare path of nan_to_num
        out = np.nan_to_num(out)
    return out.astype(np.float32)


def freshness_boost(created_s: np.ndarray, now_s: float, weight: float, half_life_days: float) -> np.ndarray:
    """``weight * 0.5 ** (age / half_life)``; 0 for unknown creation dates."""
    if weight <= 0 or len(created_s) == 0:
        return np.zeros(len(created_s), np.float32)
    age_days = np.maximum(now_s - np.asarray(created_s, np.float64), 0.0) / SECONDS_PER_DAY
    boost = weight * np.power(0.5, age_days / half_life_days)
    return np.nan_to_num(boost).astype(np.float32)


def mmr_select(
    relevance: np.ndarray,
    n: int,
    embeddings: np.ndarray | None = None,
    genres: Sequence[frozenset[str]] | None = None,
    params: RerankParams = RerankParams(),
) -> list[int]:
    """Greedy MMR with a genre cap; returns indices into the candidate arrays, best first.

    Step score: ``lambda * relevance - (1 - lambda) * max cosine to the already selected``. While
    fewer than ``genre_window`` items are chosen, a candidate that would push any of its genres
    above ``max_per_genre`` inside the window is skipped; if nothing else is left the cap gives
    way (a short list beats an empty one) — callers can see that through :func:`genre_cap_holds`.
    """
    m = len(relevance)
    n = min(n, m)
    if n <= 0:
        return []
    rel = np.asarray(relevance, np.float64)
    lam = params.mmr_lambda
    use_mmr = embeddings is not None and lam < 1.0 and len(embeddings) == m
    emb = np.asarray(embeddings, np.float32) if use_mmr else None
    max_sim = np.zeros(m, np.float64)
    chosen = np.zeros(m, bool)
    counts: dict[str, int] = {}
    out: list[int] = []
    genre_list = list(genres) if genres is not None else [frozenset()] * m
    # the step score, with the same float64 operations as ``lam * rel - (1 - lam) * max_sim`` but into reused
    # buffers (``lam * rel`` once): a few hundred candidates x n steps spent most of their time allocating
    lam_rel = lam * rel if use_mmr else rel
    penalty = np.empty(m, np.float64)
    value = np.empty(m, np.float64)
    for _ in range(n):
        if use_mmr:
            np.multiply(1.0 - lam, max_sim, out=penalty)
            np.subtract(lam_rel, penalty, out=value)
        else:
            value[:] = rel
        value[out] = -np.inf  # the chosen ones
        pick = -1
        in_window = len(out) < params.genre_window
        best = int(np.argmax(value))  # = the first of a stable descending sort: usually the pick, no sort needed
        if not in_window or all(counts.get(g, 0) < params.max_per_genre for g in genre_list[best]):
            pick = best
        order = np.argsort(-value, kind="stable") if pick < 0 else None
        for idx in order if order is not None else ():
            if chosen[idx]:
                break
            if not in_window or all(counts.get(g, 0) < params.max_per_genre for g in genre_list[idx]):
                pick = int(idx)
                break
        if pick < 0:  # the cap cannot be met with what is left
            assert order is not None
            remaining = order[~chosen[order]]
            if len(remaining) == 0:
                break
            pick = int(remaining[0])
        chosen[pick] = True
        out.append(pick)
        if in_window:
            for g in genre_list[pick]:
                counts[g] = counts.get(g, 0) + 1
        if use_mmr:
            np.maximum(max_sim, emb @ emb[pick], out=max_sim)
    return out


def genre_cap_holds(genres: Sequence[frozenset[str]], max_per_genre: int, window: int) -> bool:
    counts: dict[str, int] = {}
    for g_set in list(genres)[:window]:
        for g in g_set:
            counts[g] = counts.get(g, 0) + 1
    return all(c <= max_per_genre for c in counts.values())


def intra_list_similarity(embeddings: np.ndarray) -> float:
    """Mean pairwise cosine of a list (lower = more diverse); used by tests and benchmarks."""
    e = np.asarray(embeddings, np.float64)
    if len(e) < 2:
        return 0.0
    sims = e @ e.T
    iu = np.triu_indices(len(e), 1)
    return float(sims[iu].mean())
