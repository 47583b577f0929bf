"""Ranker training examples: listwise groups from several label windows, point-in-time features.

Label windows live inside the validation part of the split, because the two-tower model whose
scores are features was trained on the train part (a window inside train would show the ranker
scores the retriever had fitted to those very labels):

* ``global_time``: the validation period is cut into ``label_windows`` consecutive time slices;
  window w's history is train + validation before it, its features are as of its start;
* ``leave_last_out``: there is one validation item per user, so the "windows" are disjoint user
  folds of it (history = train for all of them).

The last window is the **gate window**: no ranker ever trains on it; ``train all --promote``
compares the pipeline with retrieval order there (:mod:`recsys.training.ranking.gate`).

One group per (window, user): the user's merged candidate list (what serving reorders) with
label 1 on items the user interacted with positively in the window and had not seen before.
Users whose list holds no positive are skipped (a softmax over the list needs one); non-positive
candidates are subsampled to ``list_negatives`` per group; ``random_negatives`` unseen catalog
items can be appended (off by default: serving never ranks items outside the candidate lists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.platform.data.split import Split
from recsys.training.base import Catalog, interaction_matrix
from recsys.training.config import RankingConfig
from recsys.training.ranking.context import CandidateLists, RankingContext

SPARSE_FIELDS = ("item_id", "user_id")
"""Sparse fields the ranker can use (raw ids, hashed inside the model)."""


@dataclass
class LabelWindow:
    """Labels of one window and the events visible at its start."""

    name: str
    history: pd.DataFrame
    labels: pd.DataFrame


@dataclass
class RankingExamples:
    dense: np.ndarray  # [N, F] float32 raw feature values
    sparse: np.ndarray  # [N, S] int64 raw ids (hashed inside the model)
    label: np.ndarray  # [N] float32
    group: np.ndarray  # [N] one id per (window, user): the listwise softmax runs within a group
    user: np.ndarray  # [N] user index
    item: np.ndarray  # [N] item index
    dense_names: list[str]
    sparse_names: list[str]
    windows: list[str]


def label_pairs(events: pd.DataFrame, catalog: Catalog, rc: RankingConfig) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(positives, any interaction) users x items binary matrices of ``events``."""
    pos_mask = events["event_type"].isin(rc.positive_events) | (
        (events["event_type"] == "rating") & (events["rating"] >= rc.positive_min_rating))
    pos = interaction_matrix(events[pos_mask], catalog)
    anyi = interaction_matrix(events, catalog)
    return (pos > 0).astype(np.float32).tocsr(), (anyi > 0).astype(np.float32).tocsr()


def label_windows(split: Split, n_windows: int, seed: int) -> list[LabelWindow]:
    """The windows described in the module docstring; the last one is the gate window."""
    val = split.validation
    if len(val) == 0:
        return []
    if split.protocol == "leave_last_out":
        users = np.unique(val["user_id"].to_numpy())
        rng = np.random.default_rng(seed)
        fold = rng.permutation(len(users)) % n_windows
        fold_of = dict(zip(users.tolist(), fold.tolist(), strict=True))
        f = val["user_id"].map(fold_of).to_numpy()
        return [LabelWindow(f"users-fold{k}", split.train, val[f == k]) for k in range(n_windows)]
    ts = val["timestamp"].astype("int64").to_numpy()
    cuts = np.quantile(ts, np.linspace(0, 1, n_windows + 1)[1:-1]).astype(np.int64)
    bounds = [int(ts.min()), *cuts.tolist(), int(ts.max()) + 1]
    out = []
    for k in range(n_windows):
        lo, hi = bounds[k], bounds[k + 1]
        before = val[ts < lo]
        out.append(LabelWindow(f"time{k}", pd.concat([split.train, before]) if len(before) else split.train,
                               val[(ts >= lo) & (ts < hi)]))
    return out


def window_targets(window: LabelWindow, catalog: Catalog, rc: RankingConfig,
                   positives_only: bool = True) -> sp.csr_matrix:
    """Label-window items per user (positives, or any interaction as in evaluation), minus the history's."""
    pos, anyi = label_pairs(window.labels, catalog, rc)
    pos = pos if positives_only else anyi
    seen = interaction_matrix(window.history, catalog)
    pos = sp.csr_matrix(pos - pos.multiply(seen > 0))
    pos.eliminate_zeros()
    return pos


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


def _with_random_negatives(ctx: RankingContext, cands: CandidateLists, k: int,
                           rng: np.random.Generator) -> CandidateLists:
    """Append ``k`` random catalog items per user that are neither seen nor already candidates."""
    if k <= 0:
        return cands
    extra = np.full((len(cands.users), k), -1, dtype=np.int64)
    for j, u in enumerate(cands.users):
        seen = ctx.seen.indices[ctx.seen.indptr[u]:ctx.seen.indptr[u + 1]]
        draw = rng.integers(0, ctx.catalog.n_items, size=4 * k)
        draw = draw[~np.isin(draw, seen) & ~np.isin(draw, cands.items[j])]
        draw = np.unique(draw)[:k]
        extra[j, :len(draw)] = draw
    items = np.concatenate([cands.items, extra], axis=1)
    return CandidateLists(users=cands.users, items=items, scores=ctx.source_scores(cands.users, items))


def window_examples(ctx: RankingContext, targets: sp.csr_matrix, rc: RankingConfig, rng: np.random.Generator,
                    group_offset: int, max_users: int) -> tuple[np.ndarray, ...] | None:
    """(dense, label, group, user, item) rows of one window, or None when it has no usable group."""
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    if len(users) == 0:
        return None
    cands = _with_random_negatives(ctx, ctx.candidates(users), rc.random_negatives, rng)
    items, valid = cands.items, cands.valid
    label = np.zeros(items.shape, dtype=np.float32)
    for j, u in enumerate(users):
        t = targets.indices[targets.indptr[u]:targets.indptr[u + 1]]
        label[j] = np.isin(items[j], t) & valid[j]
    has_pos = label.sum(axis=1) > 0
    feats = ctx.features(cands)
    rows_d, rows_l, rows_g, rows_u, rows_i = [], [], [], [], []
    for j in np.flatnonzero(has_pos):
        pos = np.flatnonzero(label[j] > 0)
        neg = np.flatnonzero((label[j] == 0) & valid[j])
        if rc.list_negatives and len(neg) > rc.list_negatives:
            neg = np.sort(rng.choice(neg, size=rc.list_negatives, replace=False))
        keep = np.concatenate([pos, neg])
        rows_d.append(feats[j, keep])
        rows_l.append(label[j, keep])
        rows_g.append(np.full(len(keep), group_offset + j, dtype=np.int64))
        rows_u.append(np.full(len(keep), users[j], dtype=np.int64))
        rows_i.append(items[j, keep])
    if not rows_d:
        return None
    return (np.concatenate(rows_d), np.concatenate(rows_l), np.concatenate(rows_g), np.concatenate(rows_u),
            np.concatenate(rows_i))


def build_ranking_examples(contexts: list[tuple[LabelWindow, RankingContext]], catalog: Catalog,
                           rc: RankingConfig, seed: int) -> RankingExamples:
    """Groups from every (window, context) pair, in window order."""
    rng = np.random.default_rng(seed)
    parts, names = [], []
    per_window = max(1, rc.max_users // max(len(contexts), 1))
    for k, (window, ctx) in enumerate(contexts):
        part = window_examples(ctx, window_targets(window, catalog, rc), rc, rng, k * 10_000_000, per_window)
        if part is not None:
            parts.append(part)
            names.append(window.name)
    if not parts:
        raise ValueError("no label-window user has a positive among the retrieval candidates")
    dense, label, group, user, item = (np.concatenate(x) for x in zip(*parts, strict=True))
    sparse = sparse_matrix(catalog, user, item, rc.sparse_features)
    return RankingExamples(dense=dense.astype(np.float32), sparse=sparse, label=label.astype(np.float32),
                           group=group, user=user, item=item, dense_names=list(contexts[0][1].feature_names),
                           sparse_names=list(rc.sparse_features), windows=names)
