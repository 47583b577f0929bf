"""Metric variances against hand computations and simulation; the SRM check."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.experiments.metrics import ratio_delta_variance, srm_check


def test_delta_method_matches_hand_computation():
    # per-unit clicks x and exposures y; hand computation:
    # x̄ = 1.5, ȳ = 2.75, R = 6/11; s_x² = 5/3, s_y² = 2.75/3, s_xy = 3.5/3
    # Var(R) ≈ (s_x² − 2R s_xy + R² s_y²) / (n ȳ²) = (2/3) / (4 · 7.5625) = 8/363
    ratio, variance = ratio_delta_variance(np.array([1, 0, 3, 2]), np.array([2, 2, 4, 3]))
    assert ratio == pytest.approx(6 / 11)
    assert variance == pytest.approx(8 / 363)


def test_delta_method_matches_the_spread_of_simulated_ratios():
    rng = np.random.default_rng(3)
    n, reps = 400, 3000
    exposures = rng.poisson(8, size=(reps, n)) + 1
    clicks = rng.binomial(exposures, rng.beta(0.5, 4.5, size=(reps, n)))  # user-level CTR heterogeneity
    ratios = clicks.sum(axis=1) / exposures.sum(axis=1)
    estimated = np.mean([ratio_delta_variance(clicks[i], exposures[i])[1] for i in range(200)])
    assert estimated == pytest.approx(ratios.var(ddof=1), rel=0.1)
    naive = np.mean(ratios * (1 - ratios) / exposures.sum(axis=1))  # treats exposures as independent
    assert naive < 0.7 * ratios.var(ddof=1)  # ...and so underestimates: why the delta method is needed


def test_srm_check():
    ok = srm_check({"a": 5030, "b": 4970}, {"a": 0.5, "b": 0.5})
    assert not ok.mismatch and ok.p_value > 0.5
    bad = srm_check({"a": 5300, "b": 4700}, {"a": 0.5, "b": 0.5})
    assert bad.mismatch and bad.p_value < 1e-6
    weighted = srm_check({"a": 2010, "b": 7990}, {"a": 0.2, "b": 0.8})
    assert not weighted.mismatch
    unknown = srm_check({"a": 10, "b": 10, "c": 3}, {"a": 0.5, "b": 0.5})
    assert unknown.mismatch and unknown.observed["c"] == 3
    assert not srm_check({}, {"a": 0.5, "b": 0.5}).mismatch
