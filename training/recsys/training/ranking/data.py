"""Ranker training examples: labels from a later time window, features as of the window's start.

For the users active in the label window (the validation split): positives are items they clicked,
purchased or rated >= 4 there (and had not touched before); hard negatives are sampled from the
two-tower top-K candidates they did not touch in the window; random negatives from the catalog.

By default only positives *among the top-K candidates* are kept: the ranker only ever reorders
candidates, and positives from outside them (low retrieval score, long tail) next to hard
negatives (chosen *because* their score is high) teach it that a high retrieval score or a popular
item means "negative" — measured: that ranker halved Recall@20 of the two-tower model it reorders.
Features come from a :class:`~recsys.training.ranking.features.FeatureSource` at the window start
(point in time: nothing from the label window leaks in), plus the two-tower ``retrieval_score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.training.base import Catalog, interaction_matrix
from recsys.training.config import RankingConfig

SPARSE_FIELDS = ("item_id", "user_id")
"""Sparse fields the ranker can use (raw ids, hashed inside the model)."""


@dataclass
class RankingExamples:
    dense: np.ndarray  # [N, F] float32 (raw: RANKER_FEATURES + retrieval_score)
    sparse: np.ndarray  # [N, S] int64 raw ids (hashed inside the model)
    label: np.ndarray  # [N] float32
    user: np.ndarray  # [N] user index (for per-user validation splits)
    dense_names: list[str]
    t_ns: int
    sparse_names: list[str]


def label_pairs(events: pd.DataFrame, catalog: Catalog, rc: RankingConfig) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(positives, any interaction) users x items binary matrices of ``events``."""
    pos_mask = events["event_type"].isin(rc.positive_events) | (
        (events["event_type"] == "rating") & (events["rating"] >= rc.positive_min_rating))
    pos = interaction_matrix(events[pos_mask], catalog)
    anyi = interaction_matrix(events, catalog)
    return (pos > 0).astype(np.float32).tocsr(), (anyi > 0).astype(np.float32).tocsr()


def features_for(source, t_ns: int, user_index: np.ndarray, item_index: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Feature-source matrix for (user, item) index pairs at one instant."""
    if hasattr(source, "features_at"):
        return source.features_at(int(t_ns), user_index, item_index)
    entity_df = pd.DataFrame({
        "user_id": catalog.users.id_of(user_index), "item_id": catalog.items.id_of(item_index),
        "event_timestamp": pd.to_datetime(np.full(len(user_index), t_ns), utc=True),
    })
    return source.training_features(entity_df)


def sparse_matrix(catalog: Catalog, user_index: np.ndarray, item_index: np.ndarray,
                  names: tuple[str, ...] | list[str]) -> np.ndarray:
    """[N, len(names)] raw ids of the sparse fields ``names`` (from SPARSE_FIELDS)."""
    cols = {"item_id": lambda: catalog.items.id_of(item_index), "user_id": lambda: catalog.users.id_of(user_index)}
    unknown = set(names) - set(cols)
    if unknown:
        raise ValueError(f"unknown sparse ranker fields {sorted(unknown)}; use {list(SPARSE_FIELDS)}")
    if not names:
        return np.zeros((len(item_index), 0), dtype=np.int64)
    return np.stack([cols[name]() for name in names], axis=1).astype(np.int64)


def build_ranking_examples(
    retrieval,
    history_events: pd.DataFrame,
    label_events: pd.DataFrame,
    catalog: Catalog,
    source,
    rc: RankingConfig,
    seed: int,
    max_users: int = 3000,
) -> RankingExamples:
    rng = np.random.default_rng(seed)
    t_ns = int(label_events["timestamp"].min().value)
    seen = interaction_matrix(history_events, catalog)
    pos, anyi = label_pairs(label_events, catalog, rc)
    pos = sp.csr_matrix(pos - pos.multiply(seen > 0))
    pos.eliminate_zeros()
    users = np.flatnonzero(np.diff(pos.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    cand, _ = retrieval.recommend(users, seen, n=rc.candidates)
    rows_u, rows_i, labels = [], [], []
    n_items = catalog.n_items
    for j, u in enumerate(users):
        p = pos.indices[pos.indptr[u]:pos.indptr[u + 1]]
        touched = set(anyi.indices[anyi.indptr[u]:anyi.indptr[u + 1]].tolist())
        c = cand[j][cand[j] >= 0]
        if rc.positives_from_candidates:
            p = p[np.isin(p, c)]
        hard = np.array([i for i in c if i not in touched], dtype=np.int64)
        if len(hard) > rc.hard_negatives:
            hard = rng.choice(hard, size=rc.hard_negatives, replace=False)
        rand = rng.integers(0, n_items, size=rc.random_negatives)
        rand = rand[~np.isin(rand, list(touched))]
        items = np.concatenate([p, hard, rand])
        rows_u.append(np.full(len(items), u))
        rows_i.append(items)
        labels.append(np.concatenate([np.ones(len(p)), np.zeros(len(hard) + len(rand))]))
    uu = np.concatenate(rows_u).astype(np.int64)
    ii = np.concatenate(rows_i).astype(np.int64)
    feats = features_for(source, t_ns, uu, ii, catalog)
    score = np.einsum("nd,nd->n", retrieval.user_embeddings(uu), retrieval.item_embeddings[ii])
    dense = np.concatenate([feats, score[:, None]], axis=1).astype(np.float32)
    sparse = sparse_matrix(catalog, uu, ii, rc.sparse_features)
    return RankingExamples(dense=dense, sparse=sparse, label=np.concatenate(labels).astype(np.float32), user=uu,
                           dense_names=[*source.names, "retrieval_score"], t_ns=t_ns,
                           sparse_names=list(rc.sparse_features))
