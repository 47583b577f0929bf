"""The analysis plan keeps the sequential tests' promise: τ fixed before the data, looks fixed by the plan,
and the A/A / power simulations going through `analyze_experiment`, the code behind the report."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.experiments.analysis import analyze_experiment
from recsys.experiments.exposure_log import LogFrames
from recsys.experiments.metrics import UnitEvents, unit_table, variant_metrics
from recsys.experiments.plan import group_sequential_look_units, plan_tau
from recsys.experiments.simulation import _simulated_frames, simulate_decisions, simulation_experiment


def _frames(experiment, seed=0, units=1500, lift=0.0, pre=600):
    return _simulated_frames(np.random.default_rng(seed), experiment, units_per_arm=units, lift=lift,
                             click_rate=0.1, purchase_rate=0.05, pre_period_units=pre, duration_s=7 * 86_400.0)


def _until(frames: LogFrames, cut: float) -> LogFrames:
    return LogFrames(frames.exposures[frames.exposures.ts <= cut], frames.outcomes[frames.outcomes.ts <= cut])


def test_unit_events_equal_the_unit_table_at_every_cut():
    experiment = simulation_experiment("ctr")
    frames = _frames(experiment)
    events = UnitEvents(frames, "sim", ["purchase"])
    ts = frames.exposures.loc[frames.exposures.experiment == "sim", "ts"]
    for cut in np.quantile(ts, [0.1, 0.5, 1.0]):
        fast = events.metrics_at(cut)
        slow = variant_metrics(unit_table(frames, "sim", ["purchase"], until=cut)[0])
        assert fast.keys() == slow.keys()
        for v in fast:
            a, b = fast[v].to_dict(), slow[v].to_dict()
            assert a.pop("variant") == b.pop("variant") and a.pop("adjusted") == b.pop("adjusted") == {}
            assert a == pytest.approx(b, rel=1e-9, nan_ok=True)


def test_tau_comes_from_config_baseline_pre_period_never_from_the_experiments_own_data():
    frames = _frames(simulation_experiment("ctr"))
    assert plan_tau(simulation_experiment("ctr", tau=0.02), frames).source == "config"
    baseline = plan_tau(simulation_experiment("ctr", baseline=0.08, tau_relative=0.25), frames)
    assert (baseline.source, baseline.tau) == ("baseline", pytest.approx(0.02))
    pre = plan_tau(simulation_experiment("ctr"), frames)
    assert pre.source == "pre-period" and pre.pre_registered
    assert pre.tau == pytest.approx(0.1 * 0.1, rel=0.15)  # tau_relative 0.1 x the pre-period CTR (~0.10)
    # no pre-period: no tau (it used to come from the first look's own data); the mSPRT does not run,
    # says why, and the group-sequential test (which needs no tau) still decides
    experiment = simulation_experiment("ctr", max_units_per_variant=1500, looks=5)
    analysis = analyze_experiment(experiment, _frames(experiment, pre=0))
    assert analysis.tau_plan is None and analysis.plan.tau_source == "none"
    decisions = analysis.comparisons[0].decisions
    assert decisions["msprt"].action == "continue" and "mSPRT not run" in decisions["msprt"].reason
    assert decisions["group_sequential"].action == "stop"


def test_looks_are_fixed_by_the_plan_not_by_when_the_report_runs():
    experiment = simulation_experiment("ctr", tau=0.01, max_units_per_variant=1500, looks=5, look_every_units=250)
    frames = _frames(experiment, lift=0.3)
    cut = frames.exposures.ts.quantile(0.55)
    earlier = analyze_experiment(experiment, _until(frames, cut)).comparisons[0]
    later = analyze_experiment(experiment, frames).comparisons[0]
    n = len(earlier.path.ts)
    assert 0 < n < len(later.path.ts)
    # the looks an earlier report saw are exactly the first looks of a later one: same times, same numbers
    assert np.array_equal(earlier.path.ts, later.path.ts[:n])
    assert np.allclose(earlier.path.p_value, later.path.p_value[:n])
    gs = later.decisions["group_sequential"]
    assert group_sequential_look_units(experiment) == [300, 600, 900, 1200, 1500]
    assert gs.extra["information_fraction"] in {0.2, 0.4, 0.6, 0.8, 1.0}
    assert later.decisions["msprt"].extra["tau_source"] == "config"


def test_aa_and_power_through_the_report_path():
    experiment = simulation_experiment("ctr", max_units_per_variant=2000, looks=5, look_every_units=200)
    rates = simulate_decisions(experiment, runs=120, units_per_arm=2000, lift=0.3, seed=3)
    print(rates.to_dict())
    assert rates.tau_source == "pre-period"
    # 120 runs: the binomial sd of a 0.05 rate is 0.02; the mSPRT is well below alpha in practice
    assert rates.msprt_fpr <= 0.05 + 0.04
    assert rates.group_sequential_fpr <= 0.05 + 0.04
    assert rates.msprt_power >= 0.6 and rates.group_sequential_power >= 0.8
    assert 1.0 < rates.ci_width_ratio < 3.0  # the price of validity under continuous monitoring, not 5x
