"""Display metadata (title, genres) for response items, read once from the catalog parquet.

Kept apart from :class:`recsys.serving.models.artifacts.Catalog` (what the re-ranker needs) because titles
are only for the response: a catalog without a ``title`` column simply yields ``None`` titles.
Lookups are vectorised through the same sorted-id index, so enriching 100 items costs one
``searchsorted``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.serving.models.artifacts import IdIndex


class ItemMetadata:
    def __init__(self, item_ids: np.ndarray, titles: np.ndarray, genres: list[list[str]]):
        self.index = IdIndex(item_ids)
        self.titles = titles
        self.genres = genres

    @classmethod
    def empty(cls) -> ItemMetadata:
        return cls(np.zeros(0, np.int64), np.zeros(0, object), [])

    @classmethod
    def from_items(cls, items: pd.DataFrame | None, max_title_chars: int = 200) -> ItemMetadata:
        """From the catalog frame (:func:`recsys.serving.models.artifacts.read_catalog`); None: empty."""
        if items is None:
            return cls.empty()
        ids = items["item_id"].to_numpy(np.int64)
        if "title" in items:
            titles = np.array([None if pd.isna(t) else str(t)[:max_title_chars] for t in items["title"]], object)
        else:
            titles = np.full(len(ids), None, object)
        genres = ([sorted(x for x in str(g).split("|") if x) if g is not None else [] for g in items["genres"]]
                  if "genres" in items else [[] for _ in ids])
        return cls(ids, titles, genres)

    def lookup(self, item_ids: list[int]) -> list[tuple[str | None, list[str] | None]]:
        """(title, genres) per item id; (None, None) for ids the catalog does not know."""
        if not item_ids or len(self.index) == 0:
            return [(None, None)] * len(item_ids)
        rows = self.index.lookup(np.asarray(item_ids, np.int64))
        return [(self.titles[r], self.genres[r]) if r >= 0 else (None, None) for r in rows]
