"""Each offline metric against a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.training.evaluation import (
    EvaluationReport,
    Evaluator,
    hit_matrix,
    intra_list_diversity,
    novelty,
    ranking_metrics,
)

# Two users, 6 items.  User 0 targets {1, 4}; user 1 targets {5}.
RECS = np.array([[1, 2, 4, 3], [0, 2, 3, -1]])
TARGETS = sp.csr_matrix(np.array([[0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32))


def test_hit_matrix_marks_targets_and_ignores_padding():
    hits = hit_matrix(RECS, TARGETS)
    assert hits.tolist() == [[True, False, True, False], [False, False, False, False]]


def test_ranking_metrics_hand_example():
    m = ranking_metrics(hit_matrix(RECS, TARGETS), np.array([2, 1]), k=3)
    # user 0: hits at ranks 1 and 3 of 3
    assert m["recall"].tolist() == pytest.approx([1.0, 0.0])
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg"][0] == pytest.approx(dcg / idcg)
    assert m["ndcg"][1] == 0.0
    # AP@3 = (P@1 + P@3) / min(|T|, 3) = (1 + 2/3) / 2
    assert m["map"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mrr"].tolist() == pytest.approx([1.0, 0.0])
    assert m["hit_rate"].tolist() == [1.0, 0.0]
    # at k=1 recall is 1/2 (one of two targets), ndcg 1 (ideal list of length 1 also has one hit)
    m1 = ranking_metrics(hit_matrix(RECS, TARGETS), np.array([2, 1]), k=1)
    assert m1["recall"][0] == pytest.approx(0.5)
    assert m1["ndcg"][0] == pytest.approx(1.0)


def test_mrr_uses_first_hit_rank():
    hits = np.array([[False, False, True, True]])
    assert ranking_metrics(hits, np.array([2]), k=4)["mrr"][0] == pytest.approx(1 / 3)


def test_intra_list_diversity_genre_cosine():
    genres = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)
    # list [0, 1, 2]: pairs (0,1) sim 1, (0,2) sim 0, (1,2) sim 0 -> mean (1 - sim) = 2/3
    assert intra_list_diversity(np.array([[0, 1, 2]]), genres)[0] == pytest.approx(2 / 3)
    # list [0, 3]: cos = 1/sqrt(2)
    assert intra_list_diversity(np.array([[0, 3, -1]]), genres)[0] == pytest.approx(1 - 1 / math.sqrt(2))


def test_novelty_is_mean_self_information():
    p = np.array([0.5, 0.25, 0.125])
    assert novelty(np.array([[0, 1, 2, -1]]), p)[0] == pytest.approx((1 + 2 + 3) / 3)


class _Fixed:
    """A recommender that returns fixed lists (for the evaluator's end-to-end numbers)."""

    def __init__(self, recs):
        self.recs = recs

    def recommend(self, users, user_items, n=20, filter_already_liked=True):
        return self.recs[users][:, :n], np.zeros((len(users), n), np.float32)


def test_evaluator_coverage_and_confidence_intervals():
    history = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32))
    genres = np.eye(6, dtype=np.float32)
    ev = Evaluator(history, {0: np.array([1, 4]), 1: np.array([5])}, genres, ks=(2,), bootstrap_samples=200,
                   seed=1)
    recs = np.array([[1, 2], [5, 3]])
    report = ev.evaluate_recommendations("fixed", recs)
    # coverage: union {1, 2, 3, 5} of 6 items
    assert report.metrics["coverage@2"].value == pytest.approx(4 / 6)
    assert report.metrics["recall@2"].value == pytest.approx((0.5 + 1.0) / 2)
    assert report.metrics["hit_rate@2"].value == pytest.approx(1.0)
    r = report.metrics["recall@2"]
    assert r.lo <= r.value <= r.hi and r.lo >= 0.5 - 1e-9 and r.hi <= 1.0 + 1e-9
    # novelty: p(i) = (users with i + 1) / (users with history + 1) = 1/2 for every unseen item
    assert report.metrics["novelty@2"].value == pytest.approx(1.0)
    # the same evaluator scores a Recommender through its `recommend`
    again = ev.evaluate("model", _Fixed(np.array([[1, 2], [5, 3]])))
    assert again.metrics["recall@2"].value == pytest.approx(0.75)
    # the bootstrap is seeded: identical numbers twice
    assert again.metrics["recall@2"].lo == r.lo


def test_report_table_and_json(tmp_path):
    history = sp.csr_matrix((2, 6), dtype=np.float32)
    ev = Evaluator(history, {0: np.array([1]), 1: np.array([2])}, np.eye(6, dtype=np.float32), ks=(2,),
                   bootstrap_samples=20)
    report = EvaluationReport(models=[ev.evaluate_recommendations("a", np.array([[1, 0], [2, 0]]))],
                              meta=ev.meta)
    table = report.table()
    assert "recall@2" in table and table.splitlines()[2].startswith("a ")
    saved = report.save(tmp_path / "r.json")
    import json

    data = json.loads(saved.read_text())
    assert data["models"]["a"]["metrics"]["recall@2"]["value"] == pytest.approx(1.0)
