"""Sequential tests: error rates under peeking (seeded A/A and A/B simulations), boundaries, decisions."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recsys.experiments.sequential import (
    ArmSummary,
    GroupSequentialTest,
    Look,
    MsprtTest,
    confidence_sequence_halfwidth,
    lan_demets_boundaries,
    msprt_log_lr,
)
from recsys.experiments.simulation import simulate_error_rates

ALPHA = 0.05
# 2,000 runs: the binomial sd of an estimated rate of 0.05 is 0.0049; allow three of them.
TOLERANCE = 0.015


@pytest.mark.parametrize(
    "setting",
    [
        {"metric": "binary", "baseline": 0.10, "effect": 0.02},
        {"metric": "continuous", "baseline": 1.0, "sd": 1.0, "effect": 0.06},
    ],
    ids=["binary", "continuous"],
)
def test_aa_simulation_with_peeking_after_every_batch(setting):
    started = time.perf_counter()
    rates = simulate_error_rates(runs=2000, batches=50, batch_size=200, alpha=ALPHA, gs_looks=10, seed=20, **setting)
    elapsed = time.perf_counter() - started
    print(f"\n{setting['metric']}: {rates.to_dict()} ({elapsed:.2f}s)")
    # mSPRT: valid under continuous monitoring (Ville's inequality) -> at most alpha, typically well below
    assert rates.msprt_fpr <= ALPHA + TOLERANCE
    # ...and still detects a real effect
    assert rates.msprt_power >= 0.85
    assert rates.msprt_mean_stop_fraction < 0.7  # and usually long before the horizon
    # the naive fixed-horizon t-test checked after each of 50 batches: the well-known inflation (~30%)
    assert rates.naive_fpr >= 0.2
    # group sequential with O'Brien-Fleming spending at 10 looks: alpha is spent, not exceeded
    assert rates.group_sequential_fpr <= ALPHA + TOLERANCE
    assert rates.group_sequential_power >= 0.9
    assert elapsed < 10


def test_confidence_sequence_covers_the_true_effect_at_all_times():
    rng = np.random.default_rng(11)
    runs, batches, batch, effect, tau2 = 2000, 50, 100, 0.3, 0.3**2
    n = batch * np.arange(1, batches + 1)
    a = np.cumsum(rng.normal(0.0, np.sqrt(batch), size=(runs, batches)), axis=1) / n
    b = np.cumsum(rng.normal(effect * batch, np.sqrt(batch), size=(runs, batches)), axis=1) / n
    var = 2.0 / n  # known unit variance
    half = confidence_sequence_halfwidth(var, tau2, ALPHA)
    covered = (np.abs((b - a) - effect) <= half).all(axis=1).mean()
    assert covered >= 1 - ALPHA - 0.01
    # duality: the CS excludes 0 exactly when the mSPRT rejects
    rejects = msprt_log_lr(b - a, var, tau2) >= np.log(1 / ALPHA)
    assert np.array_equal(rejects, np.abs(b - a) > half)


def test_obrien_fleming_boundaries_match_published_values():
    # Lan-DeMets O'Brien-Fleming spending, 5 equally spaced looks, two-sided alpha 0.05 (gsDesign/ldbounds)
    bounds = lan_demets_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], alpha=0.05)
    assert bounds == pytest.approx([4.8769, 3.3569, 2.6803, 2.2898, 2.0310], abs=2e-3)
    # one look = the fixed-horizon test
    assert lan_demets_boundaries([1.0], alpha=0.05)[0] == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        lan_demets_boundaries([0.5, 0.4])


def _looks(deltas, n_per_look=1000, var_unit=0.09, base=0.1):
    out = []
    for k, delta in enumerate(deltas, start=1):
        n = n_per_look * k
        out.append(Look(float(k), ArmSummary(n, base, var_unit / n), ArmSummary(n, base + delta, var_unit / n)))
    return out


def test_msprt_decisions():
    test = MsprtTest(alpha=0.05, tau=0.02, equivalence_margin=0.02, max_units_per_variant=50_000)
    win = test.run(_looks([0.0, 0.03, 0.03]), "control", "treatment").decision
    assert win.label == "stop: treatment wins" and win.p_value <= 0.05 and win.lower > 0
    assert "always-valid p" in win.reason
    lose = test.run(_looks([-0.03, -0.03]), "control", "treatment").decision
    assert lose.label == "stop: control wins" and lose.upper < 0
    going = test.run(_looks([0.005]), "control", "treatment").decision
    assert going.label == "continue" and going.action == "continue"
    same = test.run(_looks([0.0] * 40), "control", "treatment")
    assert same.decision.label == "stop: no difference" and "equivalence margin" in same.decision.reason
    assert np.all(np.diff(same.p_value) <= 0)  # always-valid p-value never increases
    assert np.all(np.diff(same.upper - same.lower) <= 0)  # running intersection only narrows
    capped = MsprtTest(alpha=0.05, tau=0.02, max_units_per_variant=3000)
    assert capped.run(_looks([0.001] * 3), "c", "t").decision.label == "stop: no difference"
    lower_better = MsprtTest(alpha=0.05, tau=0.02, higher_is_better=False)
    assert lower_better.run(_looks([-0.03, -0.03]), "c", "t").decision.winner == "t"
    empty = test.run([], "c", "t").decision
    assert empty.label == "continue" and "not enough data" in empty.reason


def test_group_sequential_decisions():
    test = GroupSequentialTest(max_units_per_variant=5000, alpha=0.05)
    early = test.run(_looks([0.0, 0.0]), "c", "t").decision
    assert early.label == "continue" and early.threshold > 3
    win = test.run(_looks([0.0, 0.02, 0.03]), "c", "t").decision
    assert win.label == "stop: t wins" and abs(win.statistic) >= win.threshold
    final = test.run(_looks([0.0, 0.0, 0.0, 0.0, 0.001]), "c", "t").decision
    assert final.label == "stop: no difference" and final.extra["information_fraction"] == 1.0
