"""Training windows for SASRec, built once on the driver and shipped to Ray Train workers via the object store.

A user's sequence is their distinct items in order of *first* interaction (a re-interaction is not
a new step), which is also how :func:`recsys.training.base.user_histories` and the online store's
``user_recent_item_ids`` order a history, so training, offline evaluation and serving read the same
sequence.  From each sequence up to ``max_windows_per_user`` windows of L+1 items are cut from the
end backwards; a window's input is its first L items and its targets the same items shifted by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.training.base import Catalog, interaction_matrix, user_histories


@dataclass
class SequenceData:
    n_items: int
    inputs: np.ndarray  # [W, L] left-padded oldest-first item indices, n_items = padding
    targets: np.ndarray  # [W, L] next item at each position, n_items = none
    val_users: np.ndarray
    val_history: np.ndarray  # [n_val, L] most recent first, -1 padded (from training events)
    val_targets: sp.csr_matrix
    val_exclude: sp.csr_matrix


def first_interaction_sequences(events: pd.DataFrame, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """(flat item indices, [n_users + 1] offsets): each user's distinct items by first interaction time."""
    u = catalog.users.index_of(events["user_id"].to_numpy())
    i = catalog.items.index_of(events["item_id"].to_numpy())
    t = events["timestamp"].astype("int64").to_numpy()
    frame = pd.DataFrame({"u": u, "i": i, "t": t})
    frame = frame[(frame["u"] >= 0) & (frame["i"] >= 0)]
    first = frame.sort_values(["u", "t"], kind="stable").drop_duplicates(["u", "i"], keep="first")
    counts = np.bincount(first["u"].to_numpy(), minlength=catalog.n_users)
    return first["i"].to_numpy().astype(np.int64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def windows(seq: np.ndarray, start: np.ndarray, n_items: int, length: int,
            max_per_user: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (input, target) windows of ``length`` from the end of every sequence (see module docstring)."""
    ins, outs = [], []
    for u in range(len(start) - 1):
        s = seq[start[u]:start[u + 1]]
        end = len(s)
        for _ in range(max_per_user):
            if end < 2:
                break
            w = s[max(0, end - length - 1):end]
            x = np.full(length, n_items, np.int64)
            y = np.full(length, n_items, np.int64)
            x[length - (len(w) - 1):] = w[:-1]
            y[length - (len(w) - 1):] = w[1:]
            ins.append(x)
            outs.append(y)
            end -= length
    if not ins:
        return np.zeros((0, length), np.int64), np.zeros((0, length), np.int64)
    return np.stack(ins), np.stack(outs)


def build_sequence_data(train_events: pd.DataFrame, validation_events: pd.DataFrame, catalog: Catalog,
                        length: int, max_windows_per_user: int, max_val_users: int = 2000,
                        seed: int = 42) -> SequenceData:
    seq, start = first_interaction_sequences(train_events, catalog)
    x, y = windows(seq, start, catalog.n_items, length, max_windows_per_user)
    train_m = interaction_matrix(train_events, catalog)
    val_m = interaction_matrix(validation_events, catalog)
    val_new = sp.csr_matrix((val_m > 0).astype(np.float32) - (val_m > 0).multiply(train_m > 0).astype(np.float32))
    val_new.eliminate_zeros()
    val_users = np.flatnonzero(np.diff(val_new.indptr) > 0)
    if len(val_users) > max_val_users:
        val_users = np.sort(np.random.default_rng(seed).choice(val_users, size=max_val_users, replace=False))
    hist = user_histories(train_events, catalog, length)
    return SequenceData(n_items=catalog.n_items, inputs=x, targets=y, val_users=val_users.astype(np.int64),
                        val_history=hist[val_users], val_targets=sp.csr_matrix(val_new[val_users]),
                        val_exclude=sp.csr_matrix(train_m[val_users]))
