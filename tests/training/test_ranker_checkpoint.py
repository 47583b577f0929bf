"""The ranker's exported epoch is chosen by per-list validation NDCG@20 (issue 24)."""

from __future__ import annotations

import numpy as np


def test_ranker_checkpoint_metric_is_per_list_ndcg():
    """The ranker's epochs are compared by NDCG@20 inside each list, not AUC pooled across lists."""
    from recsys.training.ranking.job import BEST_BY, list_ndcg

    assert BEST_BY == ("val_ndcg@20", "max")
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 9.0]])
    labels = np.array([[0, 1, 0, 0], [1, 0, 0, 1]], np.float32)
    mask = np.array([[True, True, True, True], [True, True, True, False]])  # list 2: its last slot is padding
    want = np.mean([1 / np.log2(3), (1 / np.log2(4)) / 1.0])
    assert np.isclose(list_ndcg(logits, labels, mask), want)
    # pooled AUC would prefer a model that ranks whole lists above others; per-list NDCG ignores offsets
    assert np.isclose(list_ndcg(logits + np.array([[100.0], [0.0]]), labels, mask), want)


def test_gate_needs_a_win_over_retrieval_and_no_loss_to_the_serving_ranker():
    from recsys.training.ranking.gate import PairedMetric, decide

    win = {"ndcg@20": PairedMetric(0.32, 0.30, 0.02, 0.005, 0.035)}
    tie = {"ndcg@20": PairedMetric(0.32, 0.32, 0.001, -0.01, 0.012)}
    worse = {"ndcg@20": PairedMetric(0.30, 0.32, -0.02, -0.03, -0.005)}
    assert decide("w", 100, win, 0.95).passed, "no ranker serving: beating retrieval order is enough"
    assert not decide("w", 100, tie, 0.95).passed, "a tie with retrieval order is refused"
    g = decide("w", 100, win, 0.95, vs_serving=tie, serving="ranker/v1")
    assert g.passed and "ranker/v1 (serving now)" in g.summary(), "not worse than the serving ranker"
    g = decide("w", 100, win, 0.95, vs_serving=worse, serving="ranker/v1")
    assert not g.passed and "worse than ranker/v1" in g.reason
