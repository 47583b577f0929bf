"""The ranker's input matrices for one request, in the column order of its ``feature_spec.json``.

Three kinds of dense columns:

* cross features (``spec.cross_features`` / :data:`recsys.platform.ranking_features.CROSS_FEATURES`):
  computed here by the same function training uses (:func:`~recsys.platform.ranking_features.cross_features`)
  from :class:`CrossInputs` — source scores of every candidate, candidate embeddings, the user's
  recent items' embeddings;
* online feature-store columns (hydrated item matrix, read by name; user scalars; request context);
* the legacy ``retrieval_score`` column of rankers trained before cross features existed.

Serving cost: the cross features are O(candidates x (recent items + kNN table reads)) numpy work on
arrays the request already has (candidate embeddings, retrieval scores) plus one embedding lookup
of <= ``RECENT_SIM_ITEMS`` history items — no extra remote call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mmh3
import numpy as np

from recsys.platform.ranking_features import (
    CONTENT_RECENT_ITEMS,
    CROSS_FEATURES,
    KNN_RECENT_ITEMS,
    RECENT_SIM_ITEMS,
    content_profile,
    content_scores,
    cross_features,
    knn_scores,
    recent_distinct,
    sasrec_scores,
)
from recsys.serving.models.artifacts import RankerSpec


def ranker_will_score(n_candidates: int, cold: bool, ranker: Any, version: str | None) -> bool:
    """Whether the ranker scores this candidate set: it has candidates, the user is known, a ranker is
    placed and a ranking version is promoted. The one definition: the service reads it to decide whether to
    hydrate the candidates' features first, and the scoring stage to choose between the ranker and a fallback."""
    return n_candidates > 0 and not cold and ranker is not None and bool(version)


@dataclass
class CrossInputs:
    """Per-request inputs of the cross features (shapes for n candidates, d-dim embeddings)."""

    source_scores: dict[str, np.ndarray] = field(default_factory=dict)  # source -> [n] (NaN = not scored)
    candidate_vectors: np.ndarray | None = None  # [n, d] two-tower item embeddings of the candidates
    recent_vectors: np.ndarray | None = None  # [m, d] embeddings of the user's last distinct items (m <= N)


def item_knn_scores(history_item_ids: Sequence[int], candidate_item_ids: np.ndarray, item_index: Any,
                    neighbors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[n] item-kNN score of every candidate from the user's recent items (most recent first).

    ``item_index`` maps raw ids to rows of the kNN table (``.lookup(ids) -> rows, -1 unknown``).
    """
    recent = recent_distinct(history_item_ids, KNN_RECENT_ITEMS)
    hist_rows = item_index.lookup(recent) if len(recent) else np.zeros(0, np.int64)
    cand_rows = item_index.lookup(np.asarray(candidate_item_ids, np.int64))
    return knn_scores(np.asarray(hist_rows, np.int64)[None, :], np.asarray(cand_rows, np.int64)[None, :],
                      neighbors, weights)[0]


def recent_items_for_similarity(history_item_ids: Sequence[int]) -> np.ndarray:
    """The history items whose embeddings :class:`CrossInputs` needs (first RECENT_SIM_ITEMS distinct)."""
    return recent_distinct(history_item_ids, RECENT_SIM_ITEMS)


def sequential_scores(seq: Any, history_item_ids: Sequence[int], item_ids: np.ndarray) -> np.ndarray:
    """[n] SASRec score of every candidate (NaN: no SASRec vector for this history, or an unknown item).

    ``seq``: the bundle's :class:`~recsys.serving.pipeline.candidates.sequential.SequentialCandidates`
    (the vector of the same history it proposed its candidates from).
    """
    ids = np.asarray(item_ids, np.int64)
    vec = seq.user_vector(list(history_item_ids))
    rows = np.asarray(seq.art.item_index.lookup(ids), np.int64)
    dim = seq.item_embeddings.shape[1]
    user = np.full((1, dim), np.nan, np.float32) if vec is None else np.asarray(vec, np.float32).reshape(1, dim)
    return sasrec_scores(user, seq.item_embeddings[np.maximum(rows, 0)][None], (rows >= 0)[None])[0]


def content_index_scores(content: Any, history_item_ids: Sequence[int], item_ids: np.ndarray) -> np.ndarray:
    """[n] cosine of each candidate's content vector with the profile of the first CONTENT_RECENT_ITEMS
    history items (the profile serving's content source searches with); NaN for every candidate when
    no history item has a content vector."""
    hist = list(history_item_ids)[:CONTENT_RECENT_ITEMS]
    hv, hk = content.vectors(hist) if hist else (np.zeros((0, content.dim), np.float32), np.zeros(0, bool))
    cv, ck = content.vectors(np.asarray(item_ids, np.int64))
    return content_scores(content_profile(hv[None], hk[None]), cv[None], ck[None])[0]


def cross_inputs(history_item_ids: Sequence[int], item_ids: np.ndarray, candidate_vectors: np.ndarray,
                 recent_vectors: np.ndarray | None, sources: Any, content: Any = None,
                 wanted: Sequence[str] | None = None) -> CrossInputs:
    """What :func:`build_ranker_inputs` needs for the cross features, from what the request already holds.

    ``sources``: the bundle's secondary sources (``.item_knn`` with its kNN artifact, ``.popularity``
    with ``normalized_scores``, ``.sequential`` the SASRec source); ``content``: the live content
    index. A missing one leaves its score NaN (0, one shared last rank), as in training when a source
    is absent.  The two-tower scores are the request's retrieval scores (passed to
    :func:`build_ranker_inputs`).  ``wanted``: the ranker's dense columns; the SASRec and content scores
    (an encoder pass, content-vector reads) are computed only when it uses them (None: always).
    """
    def uses(source: str) -> bool:
        return wanted is None or f"{source}_score" in wanted or f"{source}_rank" in wanted

    scores: dict[str, np.ndarray] = {}
    seq = getattr(sources, "sequential", None)
    if seq is not None and uses("sasrec"):
        scores["sasrec"] = sequential_scores(seq, history_item_ids, item_ids)
    if content is not None and uses("content"):
        scores["content"] = content_index_scores(content, history_item_ids, item_ids)
    knn = getattr(sources, "item_knn", None)
    if knn is not None:
        art = knn.art
        scores["item_knn"] = item_knn_scores(history_item_ids, item_ids, art.item_index, art.neighbors, art.weights)
    pop = getattr(sources, "popularity", None)
    if pop is not None:
        scores["popularity"] = pop.normalized_scores(np.asarray(item_ids, np.int64))
    return CrossInputs(source_scores=scores, candidate_vectors=candidate_vectors, recent_vectors=recent_vectors)


class _HashMemo:
    """murmur3 buckets of item ids, memoised as sorted arrays: a request hashes ~500 ids with one
    ``searchsorted`` instead of ~500 Python calls; ids never seen before are hashed once and merged in."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.ids = np.zeros(0, np.int64)
        self.buckets = np.zeros(0, np.int64)
        self._lock = threading.Lock()

    def __call__(self, item_ids: np.ndarray) -> np.ndarray:
        ids, buckets = self.ids, self.buckets  # one consistent pair (replaced together below)
        pos = np.minimum(np.searchsorted(ids, item_ids), max(len(ids) - 1, 0))
        known = (ids[pos] == item_ids) if len(ids) else np.zeros(len(item_ids), bool)
        if known.all():
            return buckets[pos]
        new = np.unique(item_ids[~known])
        new_buckets = np.array([mmh3.hash(str(i), 0, False) % self.vocab_size for i in new.tolist()], np.int64)
        with self._lock:
            all_ids = np.concatenate([self.ids, new])
            order = np.argsort(all_ids, kind="stable")
            all_ids, keep = all_ids[order], np.ones(len(all_ids), bool)
            keep[1:] = all_ids[1:] != all_ids[:-1]  # another thread may have added the same ids
            all_buckets = np.concatenate([self.buckets, new_buckets])[order]
            self.ids, self.buckets = all_ids[keep], all_buckets[keep]
        return self(item_ids)


_HASH_MEMOS: dict[int, _HashMemo] = {}


def hashed_item_ids(item_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """``murmur3(str(id)) % vocab_size`` for every id (the same buckets training used)."""
    memo = _HASH_MEMOS.get(vocab_size) or _HASH_MEMOS.setdefault(vocab_size, _HashMemo(vocab_size))
    return memo(np.asarray(item_ids, np.int64))


def _sparse_value(value: Any, vocab_size: int, hashed: bool) -> int:
    if value is None or vocab_size <= 0:
        return 0
    if hashed:
        return mmh3.hash(str(value), 0, False) % vocab_size
    try:
        v = int(value)
    except (TypeError, ValueError):
        return 0
    return v if 0 <= v < vocab_size else 0


def _cross_columns(n: int, retrieval_scores: np.ndarray, cross: CrossInputs | None) -> dict[str, np.ndarray]:
    cross = cross or CrossInputs()
    scores = {"two_tower": np.asarray(retrieval_scores, np.float32), **cross.source_scores}
    cvec = cross.candidate_vectors if cross.candidate_vectors is not None else np.zeros((n, 1), np.float32)
    rvec = cross.recent_vectors if cross.recent_vectors is not None else np.zeros((0, cvec.shape[1]), np.float32)
    rvec = np.asarray(rvec, np.float32)[:RECENT_SIM_ITEMS]
    cols = cross_features({k: np.asarray(v, np.float32)[None, :] for k, v in scores.items()},
                          np.asarray(cvec, np.float32)[None], rvec[None], np.ones((1, len(rvec)), bool))
    return {k: v[0] for k, v in cols.items()}


def build_ranker_inputs(
    spec: RankerSpec,
    *,
    user_id: int,
    item_ids: np.ndarray,
    retrieval_scores: np.ndarray,
    feature_names: Sequence[str] = (),
    item_features: np.ndarray | None = None,
    user_features: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    cross: CrossInputs | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(dense float32 [n, F_dense], sparse int64 [n, F_sparse]) in the spec's order.

    Cross-feature columns come from ``cross`` (two-tower scores default to ``retrieval_scores``;
    a source missing from ``cross`` scores 0 and ranks last), ``retrieval_score`` from retrieval,
    other dense columns from the online features (by name), user scalars or request context;
    unknown names are 0.  Normalisation uses the spec's mean/std (empty for current rankers, which
    normalise inside ``ranker.pt``).  Sparse ``user_id``/``item_id`` come from the request, others
    from the context or user features; ``raw_ids: true`` columns pass raw ids (``ranker.pt`` hashes them),
    other ``hash: true`` columns are murmur3-hashed into the vocabulary.
    """
    n = len(item_ids)
    col = {name: i for i, name in enumerate(feature_names)}
    user_features = user_features or {}
    context = context or {}
    cross_cols = _cross_columns(n, retrieval_scores, cross) if any(c in CROSS_FEATURES for c in spec.dense) else {}
    dense = np.zeros((n, len(spec.dense)), dtype=np.float32)
    for j, name in enumerate(spec.dense):
        if name in cross_cols:
            dense[:, j] = cross_cols[name]
        elif name == "retrieval_score":
            dense[:, j] = retrieval_scores
        elif item_features is not None and name in col:
            dense[:, j] = item_features[:, col[name]]
        else:
            v = user_features.get(name, context.get(name))
            if isinstance(v, int | float) and not isinstance(v, bool):
                dense[:, j] = float(v)
        norm = spec.normalization.get(name)
        if norm:
            std = float(norm.get("std", 1.0)) or 1.0
            dense[:, j] = (dense[:, j] - float(norm.get("mean", 0.0))) / std
    sparse = np.zeros((n, len(spec.sparse)), dtype=np.int64)
    for j, s in enumerate(spec.sparse):
        name, vocab, hashed = s.get("name"), int(s.get("vocab_size", 1)), bool(s.get("hash", True))
        if s.get("raw_ids"):  # ranker.pt hashes raw ids itself (raw_id mod vocab_size), as in training
            if name in ("item_id", "user_id"):
                sparse[:, j] = np.asarray(item_ids, np.int64) if name == "item_id" else int(user_id)
            continue
        if name == "item_id":
            ids = np.asarray(item_ids, np.int64)
            if hashed and vocab > 0:
                sparse[:, j] = hashed_item_ids(ids, vocab)
            else:
                sparse[:, j] = np.where((ids >= 0) & (ids < vocab), ids, 0)
        else:
            v = user_id if name == "user_id" else context.get(name, user_features.get(name))
            sparse[:, j] = _sparse_value(v, vocab, hashed)
    return np.nan_to_num(dense, copy=False), sparse
