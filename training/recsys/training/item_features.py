"""Item content features shared by the two-tower model and the ranker: genre multi-hot + hashed text.

Text is the title and description lower-cased, split on non-letters and hashed (murmur3) into a
fixed number of buckets, so new items get an embedding from their words without a vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mmh3
import numpy as np
import pandas as pd

from recsys.training.base import Catalog

_TOKEN_RE = re.compile(r"[a-z]+")


def hash_tokens(text: str, buckets: int, max_tokens: int) -> list[int]:
    """Distinct hashed tokens of ``text`` as bucket ids in ``1..buckets`` (0 is padding)."""
    out: list[int] = []
    seen: set[str] = set()
    for tok in _TOKEN_RE.findall(text.lower()):
        if len(tok) < 3 or tok in seen:
            continue
        seen.add(tok)
        out.append(mmh3.hash(tok, 17, signed=False) % buckets + 1)
        if len(out) == max_tokens:
            break
    return out


@dataclass
class ItemFeatures:
    genres: np.ndarray  # [n_items, n_genres] float32 multi-hot
    genre_names: list[str]
    tokens: np.ndarray  # [n_items, max_tokens] int64 bucket ids, 0 = padding
    text_buckets: int

    @classmethod
    def build(cls, items: pd.DataFrame, catalog: Catalog, text_buckets: int = 4096, max_tokens: int = 24):
        from recsys.training.evaluation import genre_matrix

        genres, names = genre_matrix(items, catalog)
        tokens = np.zeros((catalog.n_items, max_tokens), dtype=np.int64)
        rows = catalog.items.index_of(items["item_id"].to_numpy())
        texts = (items["title"].astype(str) + " " + items["description"].astype(str)).tolist()
        for row, text in zip(rows, texts, strict=True):
            if row >= 0:
                ids = hash_tokens(text, text_buckets, max_tokens)
                tokens[row, : len(ids)] = ids
        return cls(genres=genres, genre_names=names, tokens=tokens, text_buckets=text_buckets)
