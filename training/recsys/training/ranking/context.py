"""Everything the ranker can know about (user, candidate) pairs at one point in time.

A :class:`RankingContext` is built from a *history frame* (the events visible at that instant)
and does, offline, what serving does per request:

* candidates = two-tower top-K ∪ item-kNN-from-recent-history top-k ∪ SASRec top-k ∪ content top-k
  ∪ popularity top-k, the user's history removed, merged in serving's order (the candidate stage
  merges the same sources: ANN, the history sources, content, popularity); SASRec only when a
  SASRec model is given, content only when content vectors are;
* features = :func:`recsys.platform.ranking_features.cross_features` (scores and ranks of every
  source, similarity to the recent items) + the feature-store columns
  (``recsys.features.RANKER_FEATURES``, from events strictly before the instant).

The instant is the end of the history frame (its newest event + 1 ns): for ``global_time`` that
is the window / test start; for ``leave_last_out`` it is the end of the visible data.  Item-kNN
and popularity are refitted on the frame (seconds), so a label window never sees its own labels
through them; the two-tower model reads histories from the frame (fold-in, as serving does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.platform.data.schema import Dataset
from recsys.platform.ranking_features import (
    CONTENT_RECENT_ITEMS,
    CROSS_FEATURES,
    KNN_RECENCY_DECAY,
    KNN_RECENT_ITEMS,
    RECENT_SIM_ITEMS,
    content_profile,
    content_scores,
    cross_features,
    knn_scores,
    sasrec_scores,
)
from recsys.training.base import Catalog, batched, interaction_matrix, top_n, user_histories
from recsys.training.baselines import ItemKnnRecommender, PopularityRecommender
from recsys.training.config import RankingConfig
from recsys.training.ranking.features import InlineFeatureSource, features_for, ranker_feature_names


@dataclass
class CandidateLists:
    """[U, C] item rows (-1 = padding) and each source's score of every slot."""

    users: np.ndarray
    items: np.ndarray
    scores: dict[str, np.ndarray]

    @property
    def valid(self) -> np.ndarray:
        return self.items >= 0


class FeatureLeakError(ValueError):
    """A prebuilt feature store would hand the ranker events that its history frame hides."""


def hidden_events_before(dataset: Dataset, history: pd.DataFrame, t_ns: int) -> int:
    """Events of ``dataset`` before ``t_ns`` that ``history`` does not hold (0 for a global time cut).

    A Feast store is built from the whole dataset and queried at one instant; under ``leave_last_out``
    that instant (the end of the visible data) is after most users' own held-out events, which the
    store's counts, recent items and recency then contain. Counting is enough: ``history`` is a subset.
    """
    before = int((dataset.events["timestamp"].astype("int64").to_numpy() < t_ns).sum())
    return before - len(history)


def content_matrix(dataset: Dataset, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """([n_items, d] content vectors in catalog row order, [n_items] known): what serving's content index
    holds for the same catalog (the same encoder, fitted on the same items)."""
    from recsys.serving.pipeline.candidates.content_index import ContentEncoder

    items = dataset.items.drop_duplicates("item_id", keep="last")
    enc = ContentEncoder().fit(items)
    ids = np.asarray(catalog.items.id_of(np.arange(catalog.n_items)), np.int64)
    frame = items.set_index("item_id").reindex(ids)
    known = frame["title"].notna().to_numpy() if "title" in frame else np.ones(len(ids), bool)
    vecs = np.zeros((len(ids), enc.dim), np.float32)
    if known.any():
        vecs[known] = enc.transform(frame[known].reset_index())
    return vecs, known


class RankingContext:
    """Sources and features as of the end of ``history`` (see module docstring).

    ``sequential``: the SASRec model reading histories from the same frame (a ``TwoTowerRecommender``
    over the stored ``sasrec`` version), or None; ``content``: :func:`content_matrix`, or None.
    """

    def __init__(self, dataset: Dataset, history: pd.DataFrame, catalog: Catalog, retrieval,
                 rc: RankingConfig, knn_neighbors: int = 100, store_source=None, knn_shrinkage: float = 0.0,
                 sequential=None, content: tuple[np.ndarray, np.ndarray] | None = None):
        self.catalog, self.rc = catalog, rc
        self.t_ns = int(history["timestamp"].max().value) + 1 if len(history) else 0
        if store_source is not None and (hidden := hidden_events_before(dataset, history, self.t_ns)) > 0:
            raise FeatureLeakError(
                f"feature_source 'feast' reads the store as of {pd.Timestamp(self.t_ns)}, which holds {hidden:,} "
                "events this history hides (held-out events of a per-user split such as leave_last_out): the "
                "ranker would see its own labels. Use ranking.feature_source 'inline' (computed from the visible "
                "history only) or a global_time split.")
        self.seen = interaction_matrix(history, catalog)
        self.recent = user_histories(history, catalog, max(KNN_RECENT_ITEMS, RECENT_SIM_ITEMS, CONTENT_RECENT_ITEMS))
        self.retrieval = retrieval
        self.sequential = sequential
        self.content = content
        self.knn = ItemKnnRecommender(knn_neighbors, shrinkage=knn_shrinkage).fit(self.seen)  # = the served one
        pop = PopularityRecommender().fit(self.seen).scores
        self.popularity = (pop / max(float(pop.max(initial=0.0)), 1e-12)).astype(np.float32)
        self.store = store_source if store_source is not None else InlineFeatureSource(
            replace(dataset, events=history))
        self.store_names = list(getattr(self.store, "names", ranker_feature_names()))
        self.feature_names = [*CROSS_FEATURES, *self.store_names]
        self._item_vectors = np.asarray(retrieval.item_embeddings, dtype=np.float32)

    # ------------------------------------------------------------------ candidates
    def _knn_matrix(self, users: np.ndarray) -> sp.csr_matrix:
        """Users x items recency-weighted history (decay ** position), the item-kNN query."""
        hist = self.recent[users, :KNN_RECENT_ITEMS]
        r, p = np.nonzero(hist >= 0)
        w = KNN_RECENCY_DECAY ** p.astype(np.float64)
        return sp.csr_matrix((w.astype(np.float32), (r, hist[r, p])), shape=(len(users), self.catalog.n_items))

    def candidates(self, users: np.ndarray, batch_size: int = 1024) -> CandidateLists:
        """Merged candidate lists (two-tower first, then kNN, then popularity; de-duplicated)."""
        users = np.asarray(users, dtype=np.int64)
        rc = self.rc
        parts: list[np.ndarray] = []
        for sl in batched(len(users), batch_size):
            u = users[sl]
            seen = self.seen[u]
            tt_vec = self.retrieval.user_embeddings(u)
            tt_scores = tt_vec @ self._item_vectors.T
            lists = [top_n(tt_scores, rc.candidates, seen)[0]]
            if rc.knn_candidates:
                knn = (self._knn_matrix(u) @ self.knn._w).toarray()
                knn[knn <= 0] = -np.inf
                lists.append(top_n(knn, rc.knn_candidates, seen)[0])
            if rc.sasrec_candidates and self.sequential is not None:
                sq = self._sasrec_vectors(u) @ np.asarray(self.sequential.item_embeddings, np.float32).T
                lists.append(top_n(np.nan_to_num(sq, nan=-np.inf), rc.sasrec_candidates, seen)[0])
            if rc.content_candidates and self.content is not None:
                cs = self._content_profiles(u) @ self.content[0].T
                cs = np.where(self.content[1][None, :] & (np.abs(cs).sum(axis=1, keepdims=True) > 0), cs, -np.inf)
                lists.append(top_n(cs, rc.content_candidates, seen)[0])
            if rc.popularity_candidates:
                pop = np.broadcast_to(self.popularity, (len(u), self.catalog.n_items))
                lists.append(top_n(pop, rc.popularity_candidates, seen)[0])
            merged = np.concatenate(lists, axis=1)
            out = np.full(merged.shape, -1, dtype=np.int64)
            for j in range(len(u)):
                row = merged[j][merged[j] >= 0]
                _, first = np.unique(row, return_index=True)
                keep = row[np.sort(first)]
                out[j, :len(keep)] = keep
            parts.append(out)
        width = max((p.shape[1] for p in parts), default=0)
        items = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=-1) for p in parts]) \
            if parts else np.zeros((0, 0), np.int64)
        keep_cols = (items >= 0).any(axis=0)
        items = items[:, keep_cols] if items.size else items
        return CandidateLists(users=users, items=items, scores=self.source_scores(users, items))

    def _sasrec_vectors(self, users: np.ndarray) -> np.ndarray:
        """[U, d] SASRec user vectors; NaN rows for users with no history item (serving: no SASRec vector)."""
        vec = np.asarray(self.sequential.user_embeddings(users), np.float32)
        has = self.sequential.histories[users, 0] >= 0
        return np.where(has[:, None], vec, np.nan).astype(np.float32)

    def _content_profiles(self, users: np.ndarray) -> np.ndarray:
        """[U, d] content profiles of the users' first CONTENT_RECENT_ITEMS distinct recent items."""
        hist = self.recent[users, :CONTENT_RECENT_ITEMS]
        vecs, known = self.content
        return content_profile(vecs[np.maximum(hist, 0)], (hist >= 0) & known[np.maximum(hist, 0)])

    def source_scores(self, users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Each source's score of each slot (NaN on padding; a source this context lacks is left out)."""
        valid = items >= 0
        rows = np.maximum(items, 0)
        tt = np.einsum("ud,ucd->uc", self.retrieval.user_embeddings(users), self._item_vectors[rows])
        knn = knn_scores(self.recent[users], items, self.knn.neighbors, self.knn.weights)
        pop = self.popularity[rows]
        scores = [("two_tower", tt), ("item_knn", knn), ("popularity", pop)]
        if self.sequential is not None:
            emb = np.asarray(self.sequential.item_embeddings, np.float32)
            scores.append(("sasrec", sasrec_scores(self._sasrec_vectors(users), emb[rows], valid)))
        if self.content is not None:
            vecs, known = self.content
            scores.append(("content", content_scores(self._content_profiles(users), vecs[rows], known[rows])))
        return {name: np.where(valid, s, np.nan).astype(np.float32) for name, s in scores}

    # -------------------------------------------------------------------- features
    def features(self, cands: CandidateLists) -> np.ndarray:
        """[U, C, F] float32 in :attr:`feature_names` order (padding rows are zeros)."""
        users, items, valid = cands.users, cands.items, cands.valid
        recent = self.recent[users, :RECENT_SIM_ITEMS]
        rmask = recent >= 0
        cvec = self._item_vectors[np.maximum(items, 0)]
        rvec = self._item_vectors[np.maximum(recent, 0)]
        cross = cross_features(cands.scores, cvec, rvec, rmask, valid)
        out = np.zeros((*items.shape, len(self.feature_names)), dtype=np.float32)
        for j, name in enumerate(CROSS_FEATURES):
            out[..., j] = cross[name]
        uu = np.repeat(users, items.shape[1]).reshape(items.shape)[valid]
        store = features_for(self.store, self.t_ns, uu, items[valid], self.catalog)
        out[valid, len(CROSS_FEATURES):] = store
        out[~valid] = 0.0
        return out
