"""CUPED on the simulator: the same users before and during the experiment, analysed with and without it.

Each simulated user has a persistent activity level (requests per 14 days ~ Gamma(shape
``activity_shape`` = 0.5, mean ``requests_mean`` = 10): a few heavy users, many light ones) and a
persistent click propensity (``click_rate`` x Gamma(2, 1/2)), as in the main simulator. Users are
active in the 14 days before ``start`` (the pre-period, Poisson(activity) requests) and in the
experiment (1 + Poisson(activity) requests), so a user's pre-period value of a metric predicts its
in-experiment value as much as engagement persists. Every log is analysed twice by
`analyze_experiment` (the report's code), with ``analysis.cuped`` off and on, so the comparison is
paired: same data, same plan. Reported: the A/A false-positive rate of each test with and without
CUPED, power at a relative lift, and the median ratio of the CUPED to the plain fixed-horizon 95% CI
width (and of the final confidence-sequence width).

``python -m recsys.experiments.cuped_simulation --runs 300`` prints the table of docs/experiments.md.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from recsys.experiments.config import Experiment
from recsys.experiments.exposure_log import EXPOSURE_COLUMNS, OUTCOME_COLUMNS, LogFrames
from recsys.experiments.simulation import simulation_experiment

DAY_S = 86_400.0
PERIOD_S = 14 * DAY_S


def cuped_frames(
    rng: np.random.Generator,
    experiment: Experiment,
    *,
    units_per_arm: int,
    lift: float,
    click_rate: float = 0.10,
    requests_mean: float = 10.0,
    activity_shape: float = 0.5,
) -> LogFrames:
    """One log: pre-period and experiment traffic of the same users (persistent activity and propensity)."""
    start = experiment.start.timestamp()
    n = 2 * units_per_arm
    arm = rng.permutation(np.repeat([0, 1], units_per_arm))
    activity = rng.gamma(activity_shape, requests_mean / activity_shape, size=n)
    p_click = np.clip(click_rate * rng.gamma(2.0, 0.5, size=n), 0, 1)
    boost = np.where(arm == 1, 1.0 + lift, 1.0)
    pre_requests = rng.poisson(activity)
    exp_requests = 1 + rng.poisson(activity)
    arrival = start + rng.random(n) * PERIOD_S
    frames = []
    for requests, in_pre in ((pre_requests, True), (exp_requests, False)):
        unit = np.repeat(np.arange(n), requests)
        first = np.r_[True, unit[1:] != unit[:-1]] if len(unit) else np.zeros(0, bool)
        if in_pre:
            ts = start - rng.random(len(unit)) * PERIOD_S
            p = p_click[unit]
        else:
            later = arrival[unit] + rng.random(len(unit)) * (start + PERIOD_S - arrival[unit])
            ts = np.where(first, arrival[unit], later)
            p = np.clip(p_click[unit] * boost[unit], 0, 1)
        clicked = rng.random(len(unit)) < p
        frames.append((unit, ts, clicked, in_pre))
    names = np.array([f"u{i}" for i in range(n)], dtype=object)
    variants = np.array(["control", "treatment"], dtype=object)
    ex_parts, oc_parts = [], []
    for unit, ts, clicked, in_pre in frames:
        ex_parts.append(pd.DataFrame({
            "unit_id": names[unit],
            "experiment": "earlier" if in_pre else experiment.name,
            "variant": "control" if in_pre else variants[arm[unit]],
            "layer": "default",
            "request_id": [f"{'p' if in_pre else 'e'}{i}" for i in range(len(unit))],
            "ts": ts,
            "items": None,
            "is_holdout": False,
        }, columns=EXPOSURE_COLUMNS))
        oc_parts.append(pd.DataFrame({
            "unit_id": names[unit[clicked]], "event_type": "click", "value": 1.0, "ts": ts[clicked] + 5.0,
            "item_id": None,
        }, columns=OUTCOME_COLUMNS))
    return LogFrames(pd.concat(ex_parts, ignore_index=True), pd.concat(oc_parts, ignore_index=True))


@dataclass(frozen=True)
class CupedRates:
    metric: str
    runs: int
    units_per_arm: int
    pre_correlation: float  # median over A/A runs of corr(pre-period value, in-experiment value), per unit
    fixed_fpr: tuple[float, float]  # (plain, CUPED)
    group_sequential_fpr: tuple[float, float]
    msprt_fpr: tuple[float, float]
    fixed_power: tuple[float, float]
    group_sequential_power: tuple[float, float]
    ci_width_ratio: float  # median CUPED / plain fixed-horizon 95% CI width (A/A)
    cs_width_ratio: float  # median CUPED / plain final confidence-sequence width (A/A)
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def simulate_cuped(
    metric: str = "reward", *, runs: int = 200, units_per_arm: int = 2000, lift: float = 0.10, seed: int = 0
) -> CupedRates:
    """A/A and A/B runs of one setting, each analysed with and without CUPED (see the module docstring)."""
    from recsys.experiments.analysis import analyze_experiment

    plan = {"max_units_per_variant": units_per_arm, "looks": 10, "look_every_units": max(2, units_per_arm // 20),
            "reward_events": ["click"], "tau_relative": 0.1}
    plain = simulation_experiment(metric, **plan)
    adjusted = simulation_experiment(metric, cuped=True, **plan)
    rng = np.random.default_rng(seed)
    z = 1.959963984540054
    counts = np.zeros((2, 2, 3))  # (aa/ab, plain/cuped, fixed/gs/msprt)
    ci_ratio, cs_ratio, rho = [], [], []
    started = time.perf_counter()
    for label, effect in enumerate((0.0, lift)):
        for _ in range(runs):
            frames = cuped_frames(rng, plain, units_per_arm=units_per_arm, lift=effect)
            widths = []
            for k, experiment in enumerate((plain, adjusted)):
                analysis = analyze_experiment(experiment, frames)
                c, t = (analysis.metrics[v] for v in ("control", "treatment"))
                (ec, vc), (et, vt) = c.estimate(metric, bool(k)), t.estimate(metric, bool(k))
                decisions = analysis.comparisons[0].decisions
                wins = [
                    abs(et - ec) / np.sqrt(vc + vt) >= z,
                    decisions["group_sequential"].winner is not None,
                    decisions["msprt"].winner is not None,
                ]
                if label == 1:
                    wins = [w and et > ec for w in wins]
                counts[label, k] += wins
                ms = decisions["msprt"]
                widths.append((2 * z * np.sqrt(vc + vt), ms.upper - ms.lower))
                if label == 0 and k == 1:
                    rho.append(_pre_correlation(analysis, frames, metric))
            if label == 0:
                ci_ratio.append(widths[1][0] / widths[0][0])
                cs_ratio.append(widths[1][1] / widths[0][1])
    rates = counts / runs
    return CupedRates(
        metric=metric, runs=runs, units_per_arm=units_per_arm, pre_correlation=float(np.median(rho)),
        fixed_fpr=(rates[0, 0, 0], rates[0, 1, 0]), group_sequential_fpr=(rates[0, 0, 1], rates[0, 1, 1]),
        msprt_fpr=(rates[0, 0, 2], rates[0, 1, 2]), fixed_power=(rates[1, 0, 0], rates[1, 1, 0]),
        group_sequential_power=(rates[1, 0, 1], rates[1, 1, 1]), ci_width_ratio=float(np.median(ci_ratio)),
        cs_width_ratio=float(np.nanmedian(cs_ratio)), seconds=time.perf_counter() - started,
    )


def _pre_correlation(analysis, frames: LogFrames, metric: str) -> float:
    """corr(pre-period clicks, in-experiment clicks) per unit (clicks per exposure for ctr)."""
    from recsys.experiments.cuped import PRE_CLICKS, PRE_EXPOSURES
    from recsys.experiments.metrics import UnitEvents

    a = analysis.experiment.analysis
    start = analysis.experiment.start.timestamp()
    events = UnitEvents(frames, analysis.name, a.reward_events, pre_window=(start - a.pre_period_days * DAY_S, start))
    n = len(events.unit_ids)
    clicks = np.bincount(events.out_unit, weights=events.out_click, minlength=n)
    exposures = np.bincount(events.exp_unit, minlength=n).astype(float)
    pre_clicks, pre_exposures = events.pre[:, PRE_CLICKS], events.pre[:, PRE_EXPOSURES]
    if metric == "ctr":
        ok = pre_exposures > 0
        return float(np.corrcoef(clicks[ok] / exposures[ok], pre_clicks[ok] / pre_exposures[ok])[0, 1])
    return float(np.corrcoef(clicks, pre_clicks)[0, 1])


def main(argv: list[str] | None = None) -> None:
    """`python -m recsys.experiments.cuped_simulation`: the CUPED table of docs/experiments.md."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--lift", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", default="reward,ctr")
    args = ap.parse_args(argv)
    print("| metric | runs | corr(pre, during) | fixed FPR plain / CUPED | group-seq. FPR plain / CUPED | mSPRT FPR "
          "plain / CUPED | fixed power plain / CUPED | group-seq. power plain / CUPED | CI width CUPED/plain | "
          "CS width CUPED/plain |\n|---|---|---|---|---|---|---|---|---|---|")
    for i, metric in enumerate(args.metrics.split(",")):
        r = simulate_cuped(metric, runs=args.runs, units_per_arm=args.units, lift=args.lift, seed=args.seed + i)
        pair = lambda p: f"{p[0]:.3f} / {p[1]:.3f}"  # noqa: E731
        print(f"| {metric} | {r.runs} | {r.pre_correlation:.2f} | {pair(r.fixed_fpr)} | {pair(r.group_sequential_fpr)} "
              f"| {pair(r.msprt_fpr)} | {pair(r.fixed_power)} | {pair(r.group_sequential_power)} | "
              f"{r.ci_width_ratio:.2f} | {r.cs_width_ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
