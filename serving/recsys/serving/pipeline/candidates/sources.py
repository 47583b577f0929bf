"""Secondary candidate sources (popularity, item-kNN from recent history) and the candidate merge.

Every source answers the same small question — "up to k item ids with a score" — so the ingress
treats ANN retrieval, item-kNN and popularity alike and merges them with source tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys.platform.ranking_features import KNN_RECENT_ITEMS
from recsys.serving.models.artifacts import IdIndex, ItemKnnArtifacts, PopularityArtifacts


class PopularityCandidates:
    """Most popular items (the `popularity` baseline's scores); also the cold-start prior."""

    source = "popularity"

    def __init__(self, art: PopularityArtifacts):
        self.art = art
        top = float(art.scores[0]) if len(art.scores) else 1.0
        self._norm = art.scores / top if top > 0 else np.zeros_like(art.scores)
        self._index = IdIndex(art.item_ids)  # a direct id -> row table when ids are dense: one gather per request

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.art.item_ids[:k], self._norm[:k]

    def candidates(self, history: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.top(k)

    def normalized_scores(self, item_ids: np.ndarray) -> np.ndarray:
        """Popularity in [0, 1] (1 = most popular) for arbitrary ids; 0 for items never seen."""
        rows = self._index.lookup(item_ids)
        out = np.zeros(len(rows), np.float32)
        known = rows >= 0
        out[known] = self._norm[rows[known]]
        return out

    def has_interactions(self, item_ids: np.ndarray) -> np.ndarray:
        return self.normalized_scores(item_ids) > 0


class ItemKnnCandidates:
    """Neighbours of the user's recent items, weighted by similarity and recency (most recent first)."""

    source = "item_knn"

    def __init__(self, art: ItemKnnArtifacts, recency_decay: float = 0.9):
        self.art = art
        self.recency_decay = recency_decay

    def similar(self, item_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.art.item_index.lookup([item_id])[0]
        if row < 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        nb, w = self.art.neighbors[row], self.art.weights[row]
        keep = (nb >= 0) & (nb != row)
        nb, w = nb[keep][:k], w[keep][:k]
        return self.art.item_ids[nb], w.astype(np.float32)

    def from_history(self, history: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k neighbours by summed ``decay ** position * similarity`` (ties: first seen first), vectorised.

        Only the newest :data:`~recsys.platform.ranking_features.KNN_RECENT_ITEMS` history items count, as
        in training's kNN candidates and scores: the served history is longer (HISTORY_LENGTH, what the
        towers read), and the 21st-50th items' small weights used to change a few users' lists.
        """
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        rows = np.asarray(self.art.item_index.lookup(list(history)[:KNN_RECENT_ITEMS]), np.int64)
        pos = np.flatnonzero(rows >= 0)
        if len(pos) == 0:
            return empty
        rows = rows[pos]
        nb = np.asarray(self.art.neighbors[rows], np.int64)  # [h, K], history order, then neighbour order
        w = np.asarray(self.art.weights[rows], np.float64) * (self.recency_decay ** pos.astype(np.float64))[:, None]
        valid = (nb >= 0) & (nb != rows[:, None])
        nb, w = nb[valid], w[valid]
        if len(nb) == 0:
            return empty
        uniq, first, inv = np.unique(nb, return_index=True, return_inverse=True)
        sums = np.bincount(inv.reshape(-1), weights=w, minlength=len(uniq))  # adds in input order
        order = np.argsort(first, kind="stable")  # first-appearance order breaks ties, as before
        nbs, ws = uniq[order], sums[order].astype(np.float32)
        top = np.argsort(-ws, kind="stable")[:k]
        return self.art.item_ids[nbs[top]], ws[top]

    candidates = from_history


@dataclass
class Candidates:
    """Merged, de-duplicated candidates: one row per item, every source that proposed it.

    Sources are a boolean matrix (row = candidate, column = ``source_names``), so merging,
    filtering and subsetting stay vectorised; the per-item lists are built only for the few items
    a response returns (:meth:`sources_of`).
    """

    item_ids: np.ndarray
    source_names: tuple[str, ...] = ()
    source_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    source_scores: dict[str, np.ndarray] = field(default_factory=dict)  # source -> score per row (NaN: absent)

    def __len__(self) -> int:
        return len(self.item_ids)

    def sources_of(self, i: int) -> list[str]:
        return [self.source_names[j] for j in np.flatnonzero(self.source_mask[i])]

    @property
    def sources(self) -> list[list[str]]:
        return [self.sources_of(i) for i in range(len(self))]

    def subset(self, mask_or_idx: np.ndarray) -> Candidates:
        idx = np.flatnonzero(mask_or_idx) if mask_or_idx.dtype == bool else mask_or_idx
        return Candidates(self.item_ids[idx], self.source_names, self.source_mask[idx],
                          {k: v[idx] for k, v in self.source_scores.items()})


def merge_candidates(lists: list[tuple[str, np.ndarray, np.ndarray]]) -> Candidates:
    """Union of (source, ids, scores) lists in order of first appearance, with source tags.

    An item's score under a source is the first one that source gave it; vectorised with
    ``np.unique`` (no per-candidate Python loop).
    """
    names = tuple(dict.fromkeys(src for src, _, _ in lists))
    ids_all = np.concatenate([np.asarray(ids, np.int64).reshape(-1) for _, ids, _ in lists]) if lists \
        else np.zeros(0, np.int64)
    if len(ids_all) == 0:
        return Candidates(np.zeros(0, np.int64), names, np.zeros((0, len(names)), bool),
                          {n: np.zeros(0, np.float32) for n in names})
    scores_all = np.concatenate([np.asarray(sc, np.float32).reshape(-1) for _, _, sc in lists])
    src_all = np.concatenate([np.full(len(np.asarray(ids).reshape(-1)), names.index(src))
                              for src, ids, _ in lists])
    uniq, first, inv = np.unique(ids_all, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first-appearance order
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    pos = rank[inv.reshape(-1)]  # merged row of every input entry
    n = len(uniq)
    mask = np.zeros((n, len(names)), bool)
    mask[pos, src_all] = True
    source_scores = {}
    for j, name in enumerate(names):
        entries = np.flatnonzero(src_all == j)[::-1]  # reversed: the first entry is written last and wins
        col = np.full(n, np.nan, np.float32)
        col[pos[entries]] = scores_all[entries]
        source_scores[name] = col
    return Candidates(uniq[order], names, mask, source_scores)
