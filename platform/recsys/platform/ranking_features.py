"""The ranker's per-(user, candidate) cross features: ONE definition, used by training and serving.

Why here: the ranker is only as good as the agreement between the numbers it learned from and the
numbers it is fed at request time.  Training (``recsys.training.ranking``) computes these columns
for thousands of users at once; serving (``recsys.serving.pipeline.scoring.inputs``) for one request.  Both
call the functions below with arrays shaped ``[U, C]`` (users x candidates; serving: U = 1), so a
column cannot drift between the two.  Pure numpy, no training or serving imports.

Columns (all vary across one user's candidate list — a listwise ranker ignores anything constant):

* ``<source>_score`` and ``<source>_rank`` for every candidate source serving merges:
  ``two_tower`` (cosine of the L2-normalised user vector and the item embedding), ``item_knn``
  (sum over the user's last :data:`KNN_RECENT_ITEMS` distinct items of
  ``KNN_RECENCY_DECAY ** position * cosine neighbour weight``), ``popularity`` (distinct users /
  the most popular item's count), ``sasrec`` (inner product of the SASRec encoder's vector of the
  user's sequence with the item's SASRec embedding, :func:`sasrec_scores`) and ``content`` (cosine of
  the item's content vector with the user's content profile, :func:`content_profile`).  Every source
  scores *every* candidate, not only the ones it proposed, so the ranker can weigh them against each
  other.  The rank is the candidate's position in its user's list when sorted by that source's score
  (0 = best); missing / NaN scores all share the rank after the last scored one, so a source that is
  absent for a user (no SASRec model, no history) gives a column constant within the list;
* ``recent_sim_max`` / ``recent_sim_mean``: max and mean inner product of the candidate's
  two-tower embedding with the embeddings of the user's last :data:`RECENT_SIM_ITEMS` distinct items.

Request-time inputs this needs (what serving must have per request): the candidates' two-tower
scores and embeddings (it computes both), the user's recent item ids, most recent first (online
store), the embeddings of the first ``RECENT_SIM_ITEMS`` of them, the item-kNN neighbour table and
the popularity scores (the promoted baseline artifacts it already loads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recsys.platform.data.history import distinct_newest_first

SOURCES: tuple[str, ...] = ("two_tower", "item_knn", "popularity", "sasrec", "content")
"""Candidate sources serving merges (candidate lists + a score for any item); ranker columns in this order."""
KNN_RECENT_ITEMS = 20
KNN_RECENCY_DECAY = 0.9
RECENT_SIM_ITEMS = 10
CONTENT_RECENT_ITEMS = 20
"""History items in the content profile (serving's content source reads the same first 20)."""
CONTENT_RECENCY_DECAY = 0.8

CROSS_FEATURES: list[str] = [
    *(f"{s}_{kind}" for s in SOURCES for kind in ("score", "rank")),
    "recent_sim_max",
    "recent_sim_mean",
]
"""Column names produced by :func:`cross_features`, in this order."""


def recent_distinct(item_ids: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` distinct ids of a most-recent-first list (:mod:`recsys.platform.data.history`)."""
    return np.asarray(distinct_newest_first(np.asarray(item_ids, np.int64).ravel(), n), np.int64)


def list_ranks(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """[U, C] position of each candidate in its row sorted by descending score (0 = best).

    NaN scores (the source did not score the item) and invalid slots all get the same rank, the one
    after the last scored slot (so an absent source is a list-constant column, not a copy of the
    candidate order); ties among scored slots keep candidate order (stable), so training and serving
    agree exactly.
    """
    s = np.asarray(scores, dtype=np.float64)
    missing = np.isnan(s)
    if valid is not None:
        missing |= ~np.asarray(valid, dtype=bool)
    s = np.where(missing, -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")
    ranks = np.empty(s.shape, dtype=np.float32)
    np.put_along_axis(ranks, order, np.arange(s.shape[1], dtype=np.float32)[None, :].repeat(s.shape[0], 0), axis=1)
    n_scored = (~missing).sum(axis=1, keepdims=True).astype(np.float32)
    return np.where(missing, n_scored, ranks).astype(np.float32)


def knn_scores(history_rows: np.ndarray, candidate_rows: np.ndarray, neighbors: np.ndarray,
               weights: np.ndarray, decay: float = KNN_RECENCY_DECAY) -> np.ndarray:
    """[U, C] item-kNN score of each candidate given each user's recent items.

    ``history_rows`` [U, L]: item rows, most recent first, -1 = padding (only the first
    :data:`KNN_RECENT_ITEMS` are used); ``candidate_rows`` [U, C] (-1 = padding -> 0);
    ``neighbors`` / ``weights`` [n_items, K]: the item-kNN table (-1 = no neighbour).
    """
    hist = np.asarray(history_rows, dtype=np.int64)[:, :KNN_RECENT_ITEMS]
    cand = np.asarray(candidate_rows, dtype=np.int64)
    n_users, n_items = hist.shape[0], max(int(neighbors.shape[0]), 1)
    out = np.zeros(cand.shape, dtype=np.float32)
    if hist.size == 0 or neighbors.size == 0:
        return out
    pos_w = decay ** np.arange(hist.shape[1], dtype=np.float64)
    u, p = np.nonzero(hist >= 0)
    rows = hist[u, p]
    nb = neighbors[rows]  # [P, K]
    w = weights[rows].astype(np.float64) * pos_w[p][:, None]
    ok = nb >= 0
    codes = (np.repeat(u, nb.shape[1]).reshape(nb.shape)[ok].astype(np.int64) * n_items + nb[ok])
    uniq, inv = np.unique(codes, return_inverse=True)
    sums = np.bincount(inv, weights=w[ok], minlength=len(uniq))
    cand_codes = np.arange(n_users, dtype=np.int64)[:, None] * n_items + np.maximum(cand, 0)
    at = np.clip(np.searchsorted(uniq, cand_codes), 0, max(len(uniq) - 1, 0))
    if len(uniq):
        hit = (uniq[at] == cand_codes) & (cand >= 0)
        out[hit] = sums[at[hit]]
    return out


def sasrec_scores(user_vectors: np.ndarray, candidate_vectors: np.ndarray,
                  candidate_known: np.ndarray) -> np.ndarray:
    """[U, C] inner product of each user's SASRec vector [U, d] with the candidates' SASRec embeddings [U, C, d].

    A user row of NaN (no history item known to the model) or an unknown candidate gives NaN.
    """
    out = np.einsum("ud,ucd->uc", np.asarray(user_vectors, np.float32), np.asarray(candidate_vectors, np.float32))
    return np.where(np.asarray(candidate_known, bool), out, np.nan).astype(np.float32)


def content_profile(history_vectors: np.ndarray, history_known: np.ndarray,
                    decay: float = CONTENT_RECENCY_DECAY) -> np.ndarray:
    """[U, d] L2-normalised ``sum(decay ** position * content vector)`` over the first
    :data:`CONTENT_RECENT_ITEMS` history items (most recent first); zeros for a user with none known.

    The same profile the content candidate source searches with (``ContentIndex.from_history``).
    """
    vecs = np.asarray(history_vectors, np.float32)[:, :CONTENT_RECENT_ITEMS]
    known = np.asarray(history_known, bool)[:, :CONTENT_RECENT_ITEMS]
    w = (decay ** np.arange(vecs.shape[1], dtype=np.float32))[None, :] * known
    prof = np.einsum("un,und->ud", w.astype(np.float32), vecs)
    norm = np.linalg.norm(prof, axis=1, keepdims=True)
    return np.where(norm > 0, prof / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def content_scores(profile: np.ndarray, candidate_vectors: np.ndarray, candidate_known: np.ndarray) -> np.ndarray:
    """[U, C] cosine of each candidate's content vector with its user's profile (:func:`content_profile`).

    NaN for every candidate of a user without a profile; 0 for a candidate without a content vector.
    """
    prof = np.asarray(profile, np.float32)
    out = np.einsum("ud,ucd->uc", prof, np.asarray(candidate_vectors, np.float32))
    out = np.where(np.asarray(candidate_known, bool), out, 0.0)
    has = np.linalg.norm(prof, axis=1) > 0
    return np.where(has[:, None], out, np.nan).astype(np.float32)


def recent_similarity(candidate_vectors: np.ndarray, recent_vectors: np.ndarray,
                      recent_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([U, C] max, [U, C] mean) inner product of candidates [U, C, d] with recent items [U, N, d].

    ``recent_mask`` [U, N] marks real recent items; a user without any gets 0 for both.
    """
    sims = np.einsum("ucd,und->ucn", candidate_vectors.astype(np.float32), recent_vectors.astype(np.float32))
    mask = np.asarray(recent_mask, dtype=bool)[:, None, :]
    n = mask.sum(axis=2)
    smax = np.where(n > 0, np.where(mask, sims, -np.inf).max(axis=2, initial=-np.inf), 0.0)
    smean = np.where(n > 0, np.where(mask, sims, 0.0).sum(axis=2) / np.maximum(n, 1), 0.0)
    return smax.astype(np.float32), smean.astype(np.float32)


def cross_features(source_scores: Mapping[str, np.ndarray], candidate_vectors: np.ndarray,
                   recent_vectors: np.ndarray, recent_mask: np.ndarray,
                   valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every :data:`CROSS_FEATURES` column as a [U, C] float32 array.

    ``source_scores``: source name -> [U, C] scores (NaN = not scored; a missing source is all
    NaN: its score column is 0 and every candidate ranks last); ``valid`` [U, C] marks real slots.
    """
    shape = np.asarray(candidate_vectors).shape[:2]
    out: dict[str, np.ndarray] = {}
    for s in SOURCES:
        sc = np.asarray(source_scores.get(s, np.full(shape, np.nan)), dtype=np.float32).reshape(shape)
        out[f"{s}_score"] = np.nan_to_num(sc, nan=0.0, posinf=0.0, neginf=0.0)
        out[f"{s}_rank"] = list_ranks(sc, valid)
    out["recent_sim_max"], out["recent_sim_mean"] = recent_similarity(candidate_vectors, recent_vectors, recent_mask)
    return out


def select_columns(dense: np.ndarray, label: np.ndarray, group: np.ndarray,
                   names: Sequence[str]) -> tuple[list[int], dict[str, str]]:
    """Columns worth feeding a listwise ranker, and why each other column was dropped.

    Dropped: a column constant within every user's list (a softmax over the list cannot use it),
    and a column that is non-zero only on negatives (it identifies how negatives were *made*, e.g.
    "already in the user's recent items" while positives are new by construction).
    """
    keep, dropped = [], {}
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    pos = label > 0.5
    for j, name in enumerate(names):
        col = dense[order, j].astype(np.float64)
        spread = np.maximum.reduceat(col, starts) - np.minimum.reduceat(col, starts)
        if not (spread > 1e-9).any():
            dropped[name] = "constant within every user's list"
        elif pos.any() and not (dense[pos, j] != 0).any():
            dropped[name] = "non-zero only on negatives"
        else:
            keep.append(j)
    return keep, dropped
