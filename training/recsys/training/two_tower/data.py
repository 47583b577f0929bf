"""Training examples for the two-tower model, built once on the driver and shipped via the object store.

A positive is a user's distinct item at its place in the user's history order
(:mod:`recsys.platform.data.history`: last interaction, then item id); its input is the items before it
(most recent first), the same order serving and the evaluator feed the user tower.
Examples are stored as (user, position in the user's item sequence, item) and the [B, L] history
is gathered per batch from one flat array, which keeps the payload small (no [N, L] matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.training.base import Catalog, event_sequences, interaction_matrix, user_histories
from recsys.training.item_features import ItemFeatures


@dataclass
class RetrievalData:
    n_users: int
    n_items: int
    ex_user: np.ndarray  # [N] user index of each positive
    ex_pos: np.ndarray  # [N] position of the positive in the user's sequence (= history length available)
    ex_item: np.ndarray  # [N] item index
    seq_items: np.ndarray  # flat distinct-item sequences of all users, in history order
    seq_start: np.ndarray  # [n_users + 1] offsets into seq_items
    log_q: np.ndarray  # [n_items] log sampling probability of each item as an in-batch negative
    item_genres: np.ndarray
    item_tokens: np.ndarray
    text_buckets: int
    val_users: np.ndarray  # users with validation targets (possibly a sample)
    val_history: np.ndarray  # [n_val, L] their histories from training events
    val_targets: sp.csr_matrix  # [n_val, n_items]
    val_exclude: sp.csr_matrix  # [n_val, n_items] training items (filtered before scoring)

    def histories(self, users: np.ndarray, positions: np.ndarray, length: int) -> np.ndarray:
        """[B, length] items before ``positions`` in each user's sequence, most recent first, -1 padded."""
        offs = positions[:, None] - 1 - np.arange(length)[None, :]
        valid = offs >= 0
        flat = self.seq_start[users][:, None] + np.maximum(offs, 0)
        return np.where(valid, self.seq_items[np.minimum(flat, len(self.seq_items) - 1)], -1)


def build_retrieval_data(
    train_events: pd.DataFrame,
    validation_events: pd.DataFrame,
    catalog: Catalog,
    item_features: ItemFeatures,
    history_length: int,
    max_val_users: int = 2000,
    seed: int = 42,
) -> RetrievalData:
    seq_items, seq_start = event_sequences(train_events, catalog)
    seq_u = np.repeat(np.arange(catalog.n_users), np.diff(seq_start))
    ex_pos = np.arange(len(seq_u)) - seq_start[seq_u]
    item_freq = np.bincount(seq_items, minlength=catalog.n_items).astype(np.float64) + 1.0
    log_q = np.log(item_freq / item_freq.sum()).astype(np.float32)

    # Validation: targets = validation items not in training, history = training events.
    train_m = interaction_matrix(train_events, catalog)
    val_m = interaction_matrix(validation_events, catalog)
    val_new = (val_m > 0).astype(np.float32) - (val_m > 0).multiply(train_m > 0).astype(np.float32)
    val_new = sp.csr_matrix(val_new)
    val_new.eliminate_zeros()
    val_users = np.flatnonzero(np.diff(val_new.indptr) > 0)
    if len(val_users) > max_val_users:
        val_users = np.sort(np.random.default_rng(seed).choice(val_users, size=max_val_users, replace=False))
    hist_all = user_histories(train_events, catalog, history_length)
    return RetrievalData(
        n_users=catalog.n_users,
        n_items=catalog.n_items,
        ex_user=seq_u.astype(np.int64),
        ex_pos=ex_pos.astype(np.int64),
        ex_item=seq_items,
        seq_items=seq_items,
        seq_start=seq_start,
        log_q=log_q,
        item_genres=item_features.genres,
        item_tokens=item_features.tokens,
        text_buckets=item_features.text_buckets,
        val_users=val_users.astype(np.int64),
        val_history=hist_all[val_users],
        val_targets=sp.csr_matrix(val_new[val_users]),
        val_exclude=sp.csr_matrix(train_m[val_users]),
    )
