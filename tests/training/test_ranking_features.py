"""Inline ranker features: RANKER_FEATURES columns, point in time (no future leakage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.platform.data.schema import Dataset
from recsys.training.ranking.features import InlineFeatureSource


def test_features_ignore_events_at_or_after_the_row_time(small_dataset):
    ev = small_dataset.events
    t = ev["timestamp"].quantile(0.5)
    entity = pd.DataFrame({"user_id": ev["user_id"].iloc[:50].to_numpy(), "item_id": ev["item_id"].iloc[:50].to_numpy(),
                           "event_timestamp": t})
    full = InlineFeatureSource(small_dataset).training_features(entity)
    past_only = Dataset(events=ev[ev["timestamp"] < t], items=small_dataset.items, users=small_dataset.users)
    cut = InlineFeatureSource(past_only).training_features(entity)
    np.testing.assert_array_equal(full, cut)
    assert full.shape == (50, len(InlineFeatureSource(small_dataset).names))
    assert np.isfinite(full).all()


def test_counts_match_a_direct_count(small_dataset):
    src = InlineFeatureSource(small_dataset)
    ev = small_dataset.events
    t = ev["timestamp"].quantile(0.8)
    u, i = int(ev["user_id"].iloc[0]), int(ev["item_id"].iloc[0])
    row = src.training_features(pd.DataFrame({"user_id": [u], "item_id": [i], "event_timestamp": [t]}))[0]
    past = ev[ev["timestamp"] < t]
    col = {n: j for j, n in enumerate(src.names)}
    assert row[col["user_views_all"]] == (past[(past.user_id == u) & (past.event_type == "view")]).shape[0]
    assert row[col["item_clicks_all"]] == (past[(past.item_id == i) & (past.event_type == "click")]).shape[0]
    week = past[past["timestamp"] >= t - pd.Timedelta(days=7)]
    assert row[col["item_views_7d"]] == (week[(week.item_id == i) & (week.event_type == "view")]).shape[0]


# ------------------------------------------------------------ cross features (recsys.platform.ranking_features)
def test_list_ranks_put_missing_scores_last_and_keep_ties_stable():
    from recsys.platform.ranking_features import list_ranks

    s = np.array([[0.5, np.nan, 0.9, 0.5], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    valid = np.array([[True, True, True, True], [True, True, True, False]])
    np.testing.assert_array_equal(list_ranks(s, valid), [[1, 3, 0, 2], [2, 1, 0, 3]])


def test_knn_scores_match_the_serving_candidate_source_formula():
    """Batched kNN feature == a direct loop of ItemKnnCandidates.from_history's formula (decay ** position)."""
    from recsys.platform.ranking_features import KNN_RECENCY_DECAY, knn_scores

    rng = np.random.default_rng(0)
    n_items, k = 50, 6
    neighbors = rng.integers(0, n_items, size=(n_items, k))
    neighbors[:, -1] = -1
    weights = rng.random((n_items, k)).astype(np.float32)
    hist = np.array([[3, 7, -1, 9], [-1, -1, -1, -1], [1, 2, 3, 4]])
    cand = rng.integers(-1, n_items, size=(3, 20))
    got = knn_scores(hist, cand, neighbors, weights)
    for u in range(3):
        direct: dict[int, float] = {}
        for pos, row in enumerate(hist[u]):
            if row < 0:
                continue
            for nb, w in zip(neighbors[row], weights[row], strict=True):
                if nb >= 0:
                    direct[int(nb)] = direct.get(int(nb), 0.0) + KNN_RECENCY_DECAY ** pos * float(w)
        want = [direct.get(int(c), 0.0) if c >= 0 else 0.0 for c in cand[u]]
        np.testing.assert_allclose(got[u], want, rtol=1e-5, atol=1e-6)


def test_recent_similarity_and_distinct_history():
    from recsys.platform.ranking_features import recent_distinct, recent_similarity

    assert recent_distinct([5, 5, 5, 3, 5, 2, 3], 3).tolist() == [5, 3, 2]
    cand = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    recent = np.array([[[1.0, 0.0], [0.6, 0.8], [9.0, 9.0]]])
    mask = np.array([[True, True, False]])
    smax, smean = recent_similarity(cand, recent, mask)
    np.testing.assert_allclose(smax, [[1.0, 0.8]])
    np.testing.assert_allclose(smean, [[0.8, 0.4]])
    zmax, zmean = recent_similarity(cand, recent, np.zeros((1, 3), bool))
    assert (zmax == 0).all() and (zmean == 0).all()


def test_select_columns_drops_list_constant_and_negative_only_columns():
    from recsys.platform.ranking_features import select_columns

    group = np.array([0, 0, 0, 1, 1, 1])
    label = np.array([1, 0, 0, 1, 0, 0], dtype=np.float32)
    dense = np.stack([
        [5, 5, 5, 2, 2, 2],  # user-level: constant within each list
        [0, 1, 1, 0, 0, 1],  # only ever non-zero on negatives (like ui_in_recent)
        [3, 1, 2, 0, 4, 1],  # varies, on positives too
    ], axis=1).astype(np.float32)
    keep, dropped = select_columns(dense, label, group, ["user_x", "in_recent", "score"])
    assert keep == [2]
    assert set(dropped) == {"user_x", "in_recent"}


# ------------------------------------------------------------ training contexts, windows, serving parity
@pytest.fixture(scope="module")
def two_tower_stub(small_dataset):
    """A deterministic 'two-tower' (random unit item vectors, mean-of-history user tower) - no Ray needed."""
    import torch

    from recsys.training.base import Catalog
    from recsys.training.two_tower.artifacts import TwoTowerRecommender

    cat = Catalog.from_dataset(small_dataset)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(cat.n_items, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    table = torch.from_numpy(emb)

    def tower(users, hist):
        e = table[hist.clamp_min(0)] * (hist >= 0).unsqueeze(-1)
        v = e.sum(1) + 1e-3
        return v / v.norm(dim=1, keepdim=True)

    return cat, emb, lambda hist: TwoTowerRecommender(tower, emb, hist)


def test_label_windows_are_point_in_time(small_dataset):
    from recsys.platform.data.split import split_events
    from recsys.training.ranking.data import label_windows

    split = split_events(small_dataset.events, "global_time")
    windows = label_windows(split, 3, seed=0)
    assert len(windows) == 3
    assert sum(len(w.labels) for w in windows) == len(split.validation)
    for w in windows:
        assert w.history["timestamp"].max() < w.labels["timestamp"].min()  # features strictly before labels
    assert windows[0].labels["timestamp"].max() <= windows[1].labels["timestamp"].min()
    llo = split_events(small_dataset.events, "leave_last_out")
    folds = label_windows(llo, 3, seed=0)
    users = [set(f.labels["user_id"]) for f in folds]
    assert not (users[0] & users[1]) and not (users[1] & users[2]) and sum(map(len, users)) == llo.validation[
        "user_id"].nunique()


def test_training_examples_and_serving_inputs_agree(small_dataset, two_tower_stub):
    """Cross features computed offline (RankingContext) == what serving's build_ranker_inputs computes."""
    from recsys.platform.data.split import split_events
    from recsys.platform.ranking_features import CROSS_FEATURES, RECENT_SIM_ITEMS
    from recsys.serving.models.artifacts import RankerSpec
    from recsys.serving.pipeline.scoring.inputs import CrossInputs, build_ranker_inputs, item_knn_scores
    from recsys.training.base import user_histories
    from recsys.training.config import RankingConfig
    from recsys.training.ranking.context import RankingContext
    from recsys.training.ranking.data import build_ranking_examples, label_windows

    cat, emb, make = two_tower_stub
    split = split_events(small_dataset.events, "global_time")
    w = label_windows(split, 3, seed=0)[0]
    rc = RankingConfig(candidates=30, knn_candidates=10, popularity_candidates=10, list_negatives=0,
                       random_negatives=5)
    ctx = RankingContext(small_dataset, w.history, cat, make(user_histories(w.history, cat, 10)), rc)
    users = np.arange(5)
    cands = ctx.candidates(users)
    feats = ctx.features(cands)
    # candidates never include the user's history (serving filters seen items the same way)
    for j, u in enumerate(users):
        seen = set(ctx.seen.indices[ctx.seen.indptr[u]:ctx.seen.indptr[u + 1]].tolist())
        assert not seen & set(cands.items[j][cands.items[j] >= 0].tolist())

    class _Index:  # serving's IdIndex.lookup: raw id -> row
        def lookup(self, ids):
            return cat.items.index_of(np.asarray(ids))

    spec = RankerSpec(dense=list(CROSS_FEATURES), sparse=[], normalization={}, retrieval_score=False)
    recent_ids = cat.items.id_of(ctx.recent[users[0]][ctx.recent[users[0]] >= 0])  # most recent first
    valid = cands.items[0] >= 0
    item_ids = cat.items.id_of(cands.items[0][valid])
    rows = cat.items.index_of(item_ids)
    sim_ids = recent_ids[:RECENT_SIM_ITEMS]
    cross = CrossInputs(
        source_scores={"item_knn": item_knn_scores(recent_ids, item_ids, _Index(), ctx.knn.neighbors, ctx.knn.weights),
                       "popularity": ctx.popularity[rows]},
        candidate_vectors=emb[rows], recent_vectors=emb[cat.items.index_of(sim_ids)])
    tt = ctx.retrieval.user_embeddings(users[:1])[0] @ emb[rows].T
    dense, _ = build_ranker_inputs(spec, user_id=int(cat.users.id_of(np.array([0]))[0]), item_ids=item_ids,
                                   retrieval_scores=tt, cross=cross)
    offline = feats[0][valid][:, :len(CROSS_FEATURES)]
    np.testing.assert_allclose(dense, offline, rtol=1e-4, atol=1e-5)
    # random negatives are neither seen nor candidates
    examples = build_ranking_examples([(w, ctx)], cat, rc, seed=0)
    assert set(np.unique(examples.label)) <= {0.0, 1.0} and examples.label.sum() > 0
    assert len(np.unique(examples.group)) > 1
    for u in np.unique(examples.user):
        seen = set(ctx.seen.indices[ctx.seen.indptr[u]:ctx.seen.indptr[u + 1]].tolist())
        assert not seen & set(examples.item[examples.user == u].tolist())


def test_sasrec_and_content_columns_agree_with_serving(small_dataset, two_tower_stub):
    """The SASRec and content sources: candidates merged in, and the columns training computes == serving's
    ``cross_inputs`` (a SequentialCandidates over the same encoder, a ContentIndex over the same catalog)."""
    from types import SimpleNamespace

    import torch

    from recsys.platform.data.split import split_events
    from recsys.platform.ranking_features import CROSS_FEATURES, RECENT_SIM_ITEMS
    from recsys.serving.models.artifacts import RankerSpec
    from recsys.serving.pipeline.candidates.content_index import ContentIndex
    from recsys.serving.pipeline.candidates.sequential import SequentialCandidates
    from recsys.serving.pipeline.scoring.inputs import build_ranker_inputs, cross_inputs
    from recsys.training.base import user_histories
    from recsys.training.config import RankingConfig
    from recsys.training.ranking.context import RankingContext, content_matrix
    from recsys.training.two_tower.artifacts import TwoTowerRecommender

    cat, emb, make = two_tower_stub
    rng = np.random.default_rng(7)
    seq_emb = rng.normal(size=(cat.n_items, 8)).astype(np.float32)
    table = torch.from_numpy(seq_emb)
    pos_w = torch.linspace(1.0, 0.2, 6)

    def encoder(users, hist):  # order-sensitive and unnormalised, like SASRec's last position
        e = table[hist.clamp_min(0)] * ((hist >= 0).float() * pos_w[:hist.shape[1]]).unsqueeze(-1)
        return e.sum(1)

    L = 6
    split = split_events(small_dataset.events, "global_time")
    w = split.train
    rc = RankingConfig(candidates=30, knn_candidates=10, popularity_candidates=10, sasrec_candidates=15,
                       content_candidates=15, list_negatives=0)
    seq = TwoTowerRecommender(encoder, seq_emb, user_histories(w, cat, L))
    content = content_matrix(small_dataset, cat)
    ctx = RankingContext(small_dataset, w, cat, make(user_histories(w, cat, 10)), rc, sequential=seq, content=content)
    users = np.flatnonzero(ctx.recent[:, 0] >= 0)[:4]
    cands = ctx.candidates(users)
    feats = ctx.features(cands)

    class _Index:
        def lookup(self, ids):
            return cat.items.index_of(np.asarray(ids))

    all_ids = cat.items.id_of(np.arange(cat.n_items))
    art = SimpleNamespace(user_tower=encoder, item_index=_Index(), history_length=L, item_embeddings=seq_emb,
                          item_ids=all_ids)
    sources = SimpleNamespace(
        item_knn=SimpleNamespace(art=SimpleNamespace(item_index=_Index(), neighbors=ctx.knn.neighbors,
                                                     weights=ctx.knn.weights)),
        popularity=SimpleNamespace(normalized_scores=lambda ids: ctx.popularity[cat.items.index_of(ids)]),
        sequential=SequentialCandidates(art))
    index = ContentIndex.build(small_dataset.items)
    spec = RankerSpec(dense=list(CROSS_FEATURES), sparse=[], normalization={}, retrieval_score=False)
    for j, u in enumerate(users):
        recent_ids = cat.items.id_of(ctx.recent[u][ctx.recent[u] >= 0]).tolist()
        valid = cands.items[j] >= 0
        item_ids = cat.items.id_of(cands.items[j][valid])
        rows = cat.items.index_of(item_ids)
        # serving's SASRec and content candidate lists are inside the merged list
        for top, _ in (sources.sequential.from_history(recent_ids, 40), index.from_history(recent_ids[:20], 40)):
            unseen = [i for i in top.tolist() if i not in set(recent_ids) and
                      ctx.seen[u, cat.items.index_of([i])[0]] == 0][:15]
            assert set(unseen) <= set(item_ids.tolist())
        cross = cross_inputs(recent_ids, item_ids, emb[rows], emb[cat.items.index_of(recent_ids[:RECENT_SIM_ITEMS])],
                             sources, content=index)
        tt = ctx.retrieval.user_embeddings(np.array([u]))[0] @ emb[rows].T
        dense, _ = build_ranker_inputs(spec, user_id=int(cat.users.id_of(np.array([u]))[0]), item_ids=item_ids,
                                       retrieval_scores=tt, cross=cross)
        offline = feats[j][valid][:, :len(CROSS_FEATURES)]
        for c, name in enumerate(CROSS_FEATURES):
            np.testing.assert_allclose(dense[:, c], offline[:, c], rtol=1e-3, atol=1e-4, err_msg=name)
        col = CROSS_FEATURES.index
        assert np.ptp(offline[:, col("sasrec_score")]) > 0 and np.ptp(offline[:, col("content_score")]) > 0
