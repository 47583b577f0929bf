"""The one interface every model answers, and the matrices they all read.

Borrowed from ``implicit``: a model is anything with ``fit`` / ``recommend`` / ``similar_items``
over a users x items confidence matrix.  Popularity, item-kNN, ALS, the two-tower model and the
two-tower -> ranker pipeline all answer it, so one evaluator and one benchmark treat them alike.

Raw ids (arbitrary int64 from the dataset) are mapped once to dense indices by :class:`IdIndex`;
every array in this package is in index space, and only artifacts written to the model store
carry the raw ids next to them (``item_ids.npy`` / ``user_ids.npy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.platform.data.history import distinct_sequences, newest_first
from recsys.platform.data.schema import EVENT_WEIGHTS, Dataset


@runtime_checkable
class Recommender(Protocol):
    """implicit-style protocol (see docs/contracts.md); all indices are dense indices."""

    def fit(self, interactions: sp.csr_matrix) -> Recommender: ...

    def recommend(
        self, user_indices: np.ndarray, user_items: sp.csr_matrix, n: int = 20, filter_already_liked: bool = True
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def similar_items(self, item_indices: np.ndarray, n: int = 20) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class IdIndex:
    """Sorted raw ids <-> dense indices ``0..n-1`` (``-1`` for an unknown raw id)."""

    ids: np.ndarray

    @classmethod
    def from_ids(cls, ids) -> IdIndex:
        arr = np.unique(np.asarray(ids, dtype=np.int64))
        return cls(ids=arr)

    def __len__(self) -> int:
        return int(len(self.ids))

    def index_of(self, raw) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.int64)
        pos = np.searchsorted(self.ids, raw)
        pos_c = np.minimum(pos, max(len(self.ids) - 1, 0))
        ok = (pos < len(self.ids)) & (self.ids[pos_c] == raw) if len(self.ids) else np.zeros(raw.shape, bool)
        return np.where(ok, pos_c, -1).astype(np.int64)

    def id_of(self, index) -> np.ndarray:
        return self.ids[np.asarray(index, dtype=np.int64)]


@dataclass(frozen=True)
class Catalog:
    """Index maps for one dataset: the *full* user table and item catalog (incl. items without events)."""

    users: IdIndex
    items: IdIndex

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Catalog:
        return cls(users=IdIndex.from_ids(ds.users["user_id"]), items=IdIndex.from_ids(ds.items["item_id"]))

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


def event_weights(events: pd.DataFrame, weights: dict[str, float] | None = None) -> np.ndarray:
    """Implicit confidence of each event row: EVENT_WEIGHTS by type, ratings scaled by value/5."""
    w = weights or EVENT_WEIGHTS
    types = events["event_type"].astype(str)
    out = types.map(w).fillna(0.0).to_numpy(np.float32)
    is_rating = (types == "rating").to_numpy()
    if is_rating.any():
        r = events["rating"].to_numpy(np.float32)
        out[is_rating] *= np.nan_to_num(r[is_rating], nan=0.0) / 5.0
    return out


def interaction_matrix(
    events: pd.DataFrame, catalog: Catalog, weights: dict[str, float] | None = None
) -> sp.csr_matrix:
    """Users x items CSR of summed event weights (float32); events of unknown ids are dropped."""
    u = catalog.users.index_of(events["user_id"].to_numpy())
    i = catalog.items.index_of(events["item_id"].to_numpy())
    ok = (u >= 0) & (i >= 0)
    m = sp.coo_matrix(
        (event_weights(events, weights)[ok], (u[ok], i[ok])), shape=(catalog.n_users, catalog.n_items)
    ).tocsr()
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m.astype(np.float32)


def user_histories(events: pd.DataFrame, catalog: Catalog, length: int) -> np.ndarray:
    """[n_users, length] item indices, newest distinct item first, padded with -1.

    The ``history`` input of the two-tower user tower and SASRec (contracts.md), in the one history order
    (:mod:`recsys.platform.data.history`: last interaction, then item id).
    """
    seq, start = event_sequences(events, catalog)
    return newest_first(seq, start, length)


def event_sequences(events: pd.DataFrame, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """(flat item indices, [n_users + 1] offsets): every user's distinct items in history order, oldest first."""
    u = catalog.users.index_of(events["user_id"].to_numpy())
    i = catalog.items.index_of(events["item_id"].to_numpy())
    ts = events["timestamp"].astype("int64").to_numpy()
    ok = (u >= 0) & (i >= 0)
    return distinct_sequences(u[ok], i[ok], ts[ok], catalog.n_users)


def top_n(
    scores: np.ndarray, n: int, exclude: sp.csr_matrix | None = None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` columns per row of dense ``scores`` (descending), masking ``exclude[rows]`` entries.

    Masked or missing slots (when fewer than ``n`` items are left) get index -1 and score -inf.
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        sub = exclude[rows] if rows is not None else exclude
        sub = sub.tocoo()
        scores[sub.row, sub.col] = -np.inf
    n_eff = min(n, scores.shape[1])
    if n_eff < scores.shape[1]:
        part = np.argpartition(-scores, n_eff - 1, axis=1)[:, :n_eff]
        # argpartition picks an arbitrary subset of items tied with the n-th score; take the lowest
        # indices among them instead, so the top-n is deterministic and equals a stable full sort's
        # (serving's sources order ties the same way: the evaluator-parity test compares the two)
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        above = scores > kth
        tied = scores == kth
        need = n_eff - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
        part = np.nonzero(chosen)[1].reshape(scores.shape[0], n_eff)
    else:
        part = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    val = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isneginf(val), -1, idx)
    if n_eff < n:
        pad = n - n_eff
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
    return idx.astype(np.int64), val.astype(np.float32)


def batched(n: int, batch_size: int):
    """Yield ``slice`` objects covering ``range(n)`` in chunks (keeps dense score blocks small)."""
    for s in range(0, n, batch_size):
        yield slice(s, min(s + batch_size, n))
