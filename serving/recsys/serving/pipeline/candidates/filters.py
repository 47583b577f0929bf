"""Business filters on candidates: excluded ids, already-seen items, availability, genres.

Applied once per request, by the candidate stage, in one pass over the merged candidates *and* the new
items the exploration slot may insert; the exploration stage reads the filtered new items from the
candidate stage's output (``CandidateSet.explore_pool``), so a request enters this file once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FilterSpec:
    exclude: frozenset[int] = frozenset()
    seen: np.ndarray | None = None  # already-seen ids (the online set can hold thousands: an array, not a set)
    available_only: bool = True
    include_genres: frozenset[str] = frozenset()
    exclude_genres: frozenset[str] = frozenset()


def business_filter(
    item_ids: np.ndarray, genres: Sequence[frozenset[str]], available: np.ndarray, spec: FilterSpec
) -> np.ndarray:
    """Boolean mask of candidates allowed by the business rules."""
    keep = np.ones(len(item_ids), bool)
    if spec.exclude:
        keep &= ~np.isin(item_ids, np.fromiter(spec.exclude, np.int64, len(spec.exclude)))
    if spec.seen is not None and len(spec.seen):
        keep &= ~np.isin(item_ids, spec.seen)
    if spec.available_only:
        keep &= available
    if spec.include_genres:
        keep &= np.array([bool(g & spec.include_genres) for g in genres], bool)
    if spec.exclude_genres:
        keep &= np.array([not (g & spec.exclude_genres) for g in genres], bool)
    return keep
