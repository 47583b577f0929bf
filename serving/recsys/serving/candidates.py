"""Secondary candidate sources (popularity, item-kNN from recent history) and the candidate merge.

Every source answers the same small question — "up to k item ids with a score" — so the ingress
treats ANN retrieval, item-kNN and popularity alike and merges them with source tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys.serving.artifacts import ItemKnnArtifacts, PopularityArtifacts


class PopularityCandidates:
    """Most popular items (the `popularity` baseline's scores); also the cold-start prior."""

    source = "popularity"

    def __init__(self, art: PopularityArtifacts):
        self.art = art
        top = float(art.scores[0]) if len(art.scores) else 1.0
        self._norm = art.scores / top if top > 0 else np.zeros_like(art.scores)
        order = np.argsort(art.item_ids)
        self._sorted_ids, self._sorted_norm = art.item_ids[order], self._norm[order]

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.art.item_ids[:k], self._norm[:k]

    def normalized_scores(self, item_ids: np.ndarray) -> np.ndarray:
        """Popularity in [0, 1] (1 = most popular) for arbitrary ids; 0 for items never seen."""
        ids = np.asarray(item_ids, np.int64)
        if len(self._sorted_ids) == 0:
            return np.zeros(len(ids), np.float32)
        pos = np.clip(np.searchsorted(self._sorted_ids, ids), 0, len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == ids, self._sorted_norm[pos], 0.0).astype(np.float32)

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
        rows = self.art.item_index.lookup(history)
        scores: dict[int, float] = {}
        for pos, row in enumerate(rows):
            if row < 0:
                continue
            decay = self.recency_decay**pos
            for nb, w in zip(self.art.neighbors[row], self.art.weights[row], strict=True):
                if nb >= 0 and nb != row:
                    scores[int(nb)] = scores.get(int(nb), 0.0) + decay * float(w)
        if not scores:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        nbs = np.fromiter(scores.keys(), np.int64, len(scores))
        ws = np.fromiter(scores.values(), np.float32, len(scores))
        top = np.argsort(-ws, kind="stable")[:k]
        return self.art.item_ids[nbs[top]], ws[top]


@dataclass
class Candidates:
    """Merged, de-duplicated candidates: one row per item, every source that proposed it."""

    item_ids: np.ndarray
    sources: list[list[str]]
    source_scores: dict[str, np.ndarray] = field(default_factory=dict)  # source -> score per row (NaN: absent)

    def __len__(self) -> int:
        return len(self.item_ids)

    def subset(self, mask_or_idx: np.ndarray) -> Candidates:
        idx = np.flatnonzero(mask_or_idx) if mask_or_idx.dtype == bool else mask_or_idx
        return Candidates(
            self.item_ids[idx],
            [self.sources[i] for i in idx],
            {k: v[idx] for k, v in self.source_scores.items()},
        )


def merge_candidates(lists: list[tuple[str, np.ndarray, np.ndarray]]) -> Candidates:
    """Union of (source, ids, scores) lists in order of first appearance, with source tags."""
    position: dict[int, int] = {}
    ids: list[int] = []
    sources: list[list[str]] = []
    per_source: dict[str, dict[int, float]] = {}
    for source, item_ids, scores in lists:
        seen = per_source.setdefault(source, {})
        for item, score in zip(np.asarray(item_ids).tolist(), np.asarray(scores).tolist(), strict=True):
            item = int(item)
            if item not in position:
                position[item] = len(ids)
                ids.append(item)
                sources.append([source])
            elif source not in sources[position[item]]:
                sources[position[item]].append(source)
            seen.setdefault(item, float(score))
    n = len(ids)
    source_scores = {}
    for source, seen in per_source.items():
        col = np.full(n, np.nan, np.float32)
        for item, score in seen.items():
            col[position[item]] = score
        source_scores[source] = col
    return Candidates(np.asarray(ids, np.int64), sources, source_scores)
