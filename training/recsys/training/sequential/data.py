"""Training windows for SASRec, built once on the driver and shipped to Ray Train workers via the object store.

A user's sequence is their distinct items in the one history order (:mod:`recsys.platform.data.history`:
last interaction, then item id), the order the evaluator and serving feed the encoder. Each sequence is
cut from the end backwards into windows of L+1 items (all of it by default, so every interaction is a
target exactly once per epoch); a window's input is its first L items and its targets the same items
shifted by one: every position is a training target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.platform.data.history import newest_first
from recsys.training.base import Catalog, event_sequences, interaction_matrix


@dataclass
class SequenceData:
    n_items: int
    inputs: np.ndarray  # [W, L] left-padded oldest-first item indices, n_items = padding
    targets: np.ndarray  # [W, L] next item at each position, n_items = none
    user: np.ndarray  # [W] user index of each window
    log_q: np.ndarray  # [n_items] log popularity share (sampled softmax's proposal and correction)
    val_users: np.ndarray
    val_history: np.ndarray  # [n_val, L] most recent first, -1 padded (from training events)
    val_targets: sp.csr_matrix
    val_exclude: sp.csr_matrix


def windows(seq: np.ndarray, start: np.ndarray, n_items: int, length: int,
            max_per_user: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut (input, target, user) windows of ``length`` from the end of every sequence (module docstring)."""
    ins, outs, users = [], [], []
    for u in range(len(start) - 1):
        s = seq[start[u]:start[u + 1]]
        end, cut = len(s), 0
        while end >= 2 and (max_per_user is None or cut < max_per_user):
            w = s[max(0, end - length - 1):end]
            x = np.full(length, n_items, np.int64)
            y = np.full(length, n_items, np.int64)
            x[length - (len(w) - 1):] = w[:-1]
            y[length - (len(w) - 1):] = w[1:]
            ins.append(x)
            outs.append(y)
            users.append(u)
            end -= length
            cut += 1
    if not ins:
        empty = np.zeros((0, length), np.int64)
        return empty, empty.copy(), np.zeros(0, np.int64)
    return np.stack(ins), np.stack(outs), np.asarray(users, np.int64)


def build_sequence_data(train_events: pd.DataFrame, validation_events: pd.DataFrame, catalog: Catalog,
                        length: int, max_windows_per_user: int | None, max_val_users: int = 2000,
                        seed: int = 42) -> SequenceData:
    seq, start = event_sequences(train_events, catalog)
    x, y, users = windows(seq, start, catalog.n_items, length, max_windows_per_user)
    freq = np.bincount(seq, minlength=catalog.n_items).astype(np.float64) + 1.0
    train_m = interaction_matrix(train_events, catalog)
    val_m = interaction_matrix(validation_events, catalog)
    val_new = sp.csr_matrix((val_m > 0).astype(np.float32) - (val_m > 0).multiply(train_m > 0).astype(np.float32))
    val_new.eliminate_zeros()
    # validation users need a history: a user with none is the popularity fallback's, not the encoder's
    val_users = np.flatnonzero((np.diff(val_new.indptr) > 0) & (np.diff(start) > 0))
    if len(val_users) > max_val_users:
        val_users = np.sort(np.random.default_rng(seed).choice(val_users, size=max_val_users, replace=False))
    hist = newest_first(seq, start, length)  # = user_histories(train_events, ...): the one history
    return SequenceData(n_items=catalog.n_items, inputs=x, targets=y, user=users,
                        log_q=np.log(freq / freq.sum()).astype(np.float32), val_users=val_users.astype(np.int64),
                        val_history=hist[val_users], val_targets=sp.csr_matrix(val_new[val_users]),
                        val_exclude=sp.csr_matrix(train_m[val_users]))
