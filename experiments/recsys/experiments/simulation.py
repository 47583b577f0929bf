"""Seeded simulations: error rates of the sequential tests under peeking, and synthetic logs.

`simulate_decisions` is the one that backs the claims in docs/experiments.md: every simulated
experiment is a real exposure/outcome log (users with their own click propensity, 1-4 requests
each, outcomes after exposures) analysed by `analyze_experiment`, the function behind
`recsys experiments report`, with the experiment's own plan (τ source, look schedule, alpha). Its
A/A runs give the false-positive rate of the decisions a report would print, its A/B runs the power.

`simulate_error_rates` is the fast maths check: it runs thousands of A/A (and A/B) experiments at
once with numpy: per batch it draws sufficient statistics (binomial counts, or normal batch sums and
within-batch sums of squares) instead of individual users, so 2,000 runs × 50 looks take well under a
second. At every look it applies (a) the mSPRT, (b) the naive fixed-horizon t-test, and (c) at
``gs_looks`` evenly spaced looks the group-sequential test — exactly the "check the dashboard every
batch" behaviour these tests are meant to survive.

`write_synthetic_log` produces an exposure/outcome log through the real router and `ExposureLog`, for
examples, docs and the CLI tests.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from recsys.experiments.config import Experiment, ExperimentsConfig
from recsys.experiments.exposure_log import EXPOSURE_COLUMNS, OUTCOME_COLUMNS, ExposureLog, LogFrames
from recsys.experiments.router import ExperimentRouter
from recsys.experiments.sequential import lan_demets_boundaries, msprt_log_lr


@dataclass(frozen=True)
class ErrorRates:
    runs: int
    looks: int
    units_per_arm: int
    msprt_fpr: float
    naive_fpr: float
    group_sequential_fpr: float
    msprt_power: float
    naive_power: float
    group_sequential_power: float
    msprt_mean_stop_fraction: float  # mean share of the horizon used by mSPRT when it detects the effect

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _cumulative_arms(
    rng: np.random.Generator,
    runs: int,
    batches: int,
    batch_size: int,
    metric: Literal["binary", "continuous"],
    mean: float,
    sd: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (n, estimate, variance of the estimate) for one arm, shape (runs, batches)."""
    n = batch_size * np.arange(1, batches + 1, dtype=float)
    if metric == "binary":
        successes = np.cumsum(rng.binomial(batch_size, mean, size=(runs, batches)), axis=1)
        p = successes / n
        return n, p, p * (1 - p) / n
    sums = rng.normal(batch_size * mean, sd * np.sqrt(batch_size), size=(runs, batches))
    within = sd**2 * rng.chisquare(batch_size - 1, size=(runs, batches))  # Σ(x − batch mean)²
    batch_means = sums / batch_size
    total = np.cumsum(sums, axis=1)
    grand = total / n
    # total sum of squares about the grand mean = within + between (parallel-variance formula)
    ss = np.cumsum(within + batch_size * batch_means**2, axis=1) - n * grand**2
    var_unit = ss / (n - 1)
    return n, grand, var_unit / n


def simulate_error_rates(
    *,
    runs: int = 2000,
    batches: int = 50,
    batch_size: int = 200,
    metric: Literal["binary", "continuous"] = "binary",
    baseline: float = 0.10,
    effect: float = 0.02,
    sd: float = 1.0,
    tau: float | None = None,
    alpha: float = 0.05,
    gs_looks: int = 10,
    seed: int = 0,
) -> ErrorRates:
    """False-positive rate (A/A) and power (true difference ``effect``) under peeking after every batch.

    ``baseline`` is the control rate (binary) or mean (continuous); ``tau`` defaults to ``effect``.
    """
    if batches % gs_looks:
        raise ValueError("batches must be a multiple of gs_looks")
    rng = np.random.default_rng(seed)
    tau2 = (tau if tau is not None else effect) ** 2
    fractions = np.arange(1, gs_looks + 1) / gs_looks
    gs_bounds = lan_demets_boundaries(fractions, alpha)
    gs_index = np.arange(batches // gs_looks - 1, batches, batches // gs_looks)
    results: dict[str, dict[str, float]] = {}
    for label, lift in (("aa", 0.0), ("ab", effect)):
        n, est_c, var_c = _cumulative_arms(rng, runs, batches, batch_size, metric, baseline, sd)
        _, est_t, var_t = _cumulative_arms(rng, runs, batches, batch_size, metric, baseline + lift, sd)
        delta = est_t - est_c
        var = np.maximum(var_c + var_t, 1e-12)
        msprt_hit = msprt_log_lr(delta, var, tau2) >= np.log(1 / alpha)
        df = 2 * n - 2
        naive_hit = 2 * stats.t.sf(np.abs(delta) / np.sqrt(var), df) < alpha
        z_gs = np.abs(delta[:, gs_index]) / np.sqrt(var[:, gs_index])
        gs_hit = (z_gs >= gs_bounds).any(axis=1)
        first = np.where(msprt_hit.any(axis=1), msprt_hit.argmax(axis=1) + 1, batches)
        results[label] = {
            "msprt": float(msprt_hit.any(axis=1).mean()),
            "naive": float(naive_hit.any(axis=1).mean()),
            "gs": float(gs_hit.mean()),
            "stop": float((first[msprt_hit.any(axis=1)] / batches).mean()) if msprt_hit.any() else 1.0,
        }
    return ErrorRates(
        runs=runs,
        looks=batches,
        units_per_arm=batches * batch_size,
        msprt_fpr=results["aa"]["msprt"],
        naive_fpr=results["aa"]["naive"],
        group_sequential_fpr=results["aa"]["gs"],
        msprt_power=results["ab"]["msprt"],
        naive_power=results["ab"]["naive"],
        group_sequential_power=results["ab"]["gs"],
        msprt_mean_stop_fraction=results["ab"]["stop"],
    )


DAY_S = 86_400.0


@dataclass(frozen=True)
class DecisionRates:
    """How often the report's decisions are wrong (A/A) or right (A/B), over seeded simulated logs."""

    runs: int
    units_per_arm: int
    metric: str
    baseline: float
    lift_relative: float
    tau: float
    tau_source: str
    msprt_fpr: float
    msprt_power: float
    group_sequential_fpr: float
    group_sequential_power: float
    fixed_horizon_power: float  # one z-test on the full sample (the benchmark nobody may peek at)
    msprt_mean_stop_fraction: float  # share of units_per_arm seen when the mSPRT first stopped (A/B)
    ci_width_ratio: float  # median (final confidence-sequence width / fixed-horizon 95% CI width), A/A
    seconds: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def simulation_experiment(metric: Literal["ctr", "conversion", "reward"] = "ctr", **analysis: object) -> Experiment:
    """A 50/50 control/treatment experiment starting 2025-01-01 with the given analysis settings."""
    return Experiment.model_validate(
        {
            "name": "sim",
            "start": "2025-01-01T00:00:00Z",
            "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
            "analysis": {"primary_metric": metric, **analysis},
        }
    )


def _simulated_frames(
    rng: np.random.Generator,
    experiment: Experiment,
    *,
    units_per_arm: int,
    lift: float,
    click_rate: float,
    purchase_rate: float,
    pre_period_units: int,
    duration_s: float,
) -> LogFrames:
    """One experiment's log (plus pre-period traffic) as the reader would return it."""
    metric = experiment.analysis.primary_metric
    start = experiment.start.timestamp() if experiment.start else 1_735_689_600.0
    n_exp = 2 * units_per_arm
    n = n_exp + pre_period_units
    arm = np.zeros(n, dtype=np.int8)
    arm[:n_exp] = rng.permutation(np.repeat([0, 1], units_per_arm))
    arrival = np.empty(n)
    arrival[:n_exp] = start + rng.random(n_exp) * duration_s
    pre_days = experiment.analysis.pre_period_days
    arrival[n_exp:] = start - rng.random(pre_period_units) * min(pre_days, 7.0) * DAY_S
    in_pre = np.zeros(n, bool)
    in_pre[n_exp:] = True
    propensity = rng.gamma(2.0, 0.5, size=n)  # users differ: the reason CTR needs the delta method
    boost = np.where(arm == 1, 1.0 + lift, 1.0)
    p_click = np.clip(click_rate * propensity * (boost if metric == "ctr" else 1.0), 0, 1)
    p_buy = np.clip(purchase_rate * propensity * (boost if metric != "ctr" else 1.0), 0, 1)
    requests = rng.integers(1, 5, size=n)
    unit = np.repeat(np.arange(n), requests)
    step = np.arange(len(unit)) - np.repeat(np.cumsum(requests) - requests, requests)
    ts = arrival[unit] + step * 600.0
    if pre_period_units:
        ts = np.where(in_pre[unit], np.minimum(ts, start - 1.0), ts)
    clicked = rng.random(len(unit)) < p_click[unit]
    bought = rng.random(len(unit)) < p_buy[unit]
    names = np.array([f"u{i}" for i in range(n)], dtype=object)
    variants = np.array(["control", "treatment"], dtype=object)[arm]
    exposures = pd.DataFrame(
        {
            "unit_id": names[unit],
            "experiment": np.where(in_pre[unit], "earlier", experiment.name),
            "variant": np.where(in_pre[unit], "control", variants[unit]),
            "layer": "default",
            "request_id": np.arange(len(unit)),
            "ts": ts,
            "items": None,
            "is_holdout": False,
        },
        columns=EXPOSURE_COLUMNS,
    )
    click_ts = ts[clicked] + 5.0
    buy_ts = ts[bought] + 30.0
    outcomes = pd.DataFrame(
        {
            "unit_id": np.concatenate([names[unit[clicked]], names[unit[bought]]]),
            "event_type": ["click"] * int(clicked.sum()) + ["purchase"] * int(bought.sum()),
            "value": np.concatenate([np.ones(int(clicked.sum())), rng.lognormal(3.0, 0.5, int(bought.sum()))]),
            "ts": np.concatenate([click_ts, buy_ts]),
            "item_id": None,
        },
        columns=OUTCOME_COLUMNS,
    )
    return LogFrames(exposures, outcomes)


def simulate_decisions(
    experiment: Experiment,
    *,
    runs: int = 500,
    units_per_arm: int = 4000,
    lift: float = 0.10,
    click_rate: float = 0.10,
    purchase_rate: float = 0.02,
    pre_period_units: int = 2000,
    duration_s: float = 14 * DAY_S,
    seed: int = 0,
    power: bool = True,
) -> DecisionRates:
    """A/A false-positive rate and A/B power of the decisions `analyze_experiment` makes for ``experiment``.

    ``lift`` is relative, on the click rate for ``ctr`` and on the purchase rate for ``conversion`` and
    ``reward``. Each run is a fresh log: ``units_per_arm`` users per arm arriving over ``duration_s``,
    plus ``pre_period_units`` users in the week before ``start`` (the pre-period τ is drawn from
    them unless the config fixes τ). A false positive is any "stop: <variant> wins" in an A/A run.
    ``power=False`` runs the A/A half only (the power fields are then NaN).
    """
    from recsys.experiments.analysis import analyze_experiment

    if len(experiment.variants) != 2:
        raise ValueError("simulate_decisions needs an experiment with exactly two variants")
    rng = np.random.default_rng(seed)
    control = experiment.control_variant
    treatment = next(v.name for v in experiment.variants if v.name != control)
    metric = experiment.analysis.primary_metric
    cuped = experiment.analysis.cuped
    z = stats.norm.isf(experiment.analysis.alpha / 2)
    counts = {"aa_msprt": 0, "aa_gs": 0, "ab_msprt": 0, "ab_gs": 0, "ab_fixed": 0}
    stops: list[float] = []
    ratios: list[float] = []
    taus: list[tuple[float, str]] = []
    started = time.perf_counter()
    for label, effect in (("aa", 0.0), ("ab", lift)) if power else (("aa", 0.0),):
        for _ in range(runs):
            frames = _simulated_frames(
                rng, experiment, units_per_arm=units_per_arm, lift=effect, click_rate=click_rate,
                purchase_rate=purchase_rate, pre_period_units=pre_period_units, duration_s=duration_s,
            )
            analysis = analyze_experiment(experiment, frames)
            if analysis.tau_plan is not None:
                taus.append((analysis.tau_plan.tau, analysis.tau_plan.source))
            comparison = analysis.comparisons[0]
            ms = comparison.decisions.get("msprt")
            gs = comparison.decisions.get("group_sequential")
            if label == "aa":
                counts["aa_msprt"] += bool(ms and ms.winner is not None)
                counts["aa_gs"] += bool(gs and gs.winner is not None)
                if ms is not None and np.isfinite(ms.upper - ms.lower):
                    c, t = analysis.metrics[control], analysis.metrics[treatment]
                    se = np.sqrt(c.estimate(metric, cuped)[1] + t.estimate(metric, cuped)[1])
                    ratios.append((ms.upper - ms.lower) / (2 * z * se))
            else:
                counts["ab_msprt"] += bool(ms and ms.winner == treatment)
                counts["ab_gs"] += bool(gs and gs.winner == treatment)
                path = comparison.path
                if ms and ms.winner == treatment and path.decision.method == "msprt":
                    first = int(np.argmax(path.p_value <= ms.extra["alpha"]))
                    stops.append((first + 1) * experiment.analysis.look_every_units / units_per_arm)
                c, t = analysis.metrics[control], analysis.metrics[treatment]
                (ec, vc), (et, vt) = c.estimate(metric, cuped), t.estimate(metric, cuped)
                counts["ab_fixed"] += bool((et - ec) / np.sqrt(vc + vt) >= z)
    tau, source = (float(np.median([t for t, _ in taus])), taus[0][1]) if taus else (float("nan"), "none")
    base = click_rate if metric == "ctr" else purchase_rate
    return DecisionRates(
        runs=runs,
        units_per_arm=units_per_arm,
        metric=metric,
        baseline=base,
        lift_relative=lift,
        tau=tau,
        tau_source=source,
        msprt_fpr=counts["aa_msprt"] / runs,
        msprt_power=counts["ab_msprt"] / runs if power else float("nan"),
        group_sequential_fpr=counts["aa_gs"] / runs,
        group_sequential_power=counts["ab_gs"] / runs if power else float("nan"),
        fixed_horizon_power=counts["ab_fixed"] / runs if power else float("nan"),
        msprt_mean_stop_fraction=float(np.mean(stops)) if stops else float("nan"),
        ci_width_ratio=float(np.median(ratios)) if ratios else float("nan"),
        seconds=time.perf_counter() - started,
    )


def write_synthetic_log(
    config: ExperimentsConfig,
    directory: str | Path,
    *,
    units: int = 4000,
    requests_per_unit: tuple[int, int] = (1, 4),
    click_rate: dict[str, float] | None = None,
    purchase_rate: dict[str, float] | None = None,
    start_ts: float | None = None,
    duration_s: float = 7 * 86_400.0,
    seed: int = 0,
) -> int:
    """Simulate traffic through the real router and log exposures/outcomes; returns exposures written.

    ``click_rate``/``purchase_rate`` map variant name -> per-exposure probability (default 0.10/0.02).
    Purchases carry a value (lognormal amount) so that "reward" has something continuous to average.
    Traffic starts one minute after the latest experiment start (or at ``start_ts``).
    """
    rng = np.random.default_rng(seed)
    router = ExperimentRouter(config)
    click_rate = click_rate or {}
    purchase_rate = purchase_rate or {}
    if start_ts is None:
        starts = [e.start.timestamp() for e in config.experiments if e.start is not None]
        start_ts = max(starts) + 60.0 if starts else 1_700_000_000.0
    written = 0
    with ExposureLog(directory, fsync="never") as log:
        for u in range(units):
            unit = f"user-{u}"
            attributes = {"segment": "new" if rng.random() < 0.3 else "returning"}
            arrival = start_ts + rng.random() * duration_s * 0.8
            for r in range(int(rng.integers(requests_per_unit[0], requests_per_unit[1] + 1))):
                ts = arrival + r * 600.0 + rng.random() * 60
                assignments = router.assign(unit, attributes, now=ts)
                items = [int(i) for i in rng.integers(0, 1000, size=5)]
                for a in assignments:
                    log.log_assignment(unit, a, request_id=f"{unit}-{r}", items=items, ts=ts)
                    written += 1
                # outcomes follow the first layer's variant (the one that picked the models)
                variant = assignments[0].variant if assignments else ""
                if rng.random() < click_rate.get(variant, 0.10):
                    log.log_outcome(unit, "click", 1.0, ts + 5, item_id=items[0])
                if rng.random() < purchase_rate.get(variant, 0.02):
                    log.log_outcome(unit, "purchase", float(rng.lognormal(3, 0.5)), ts + 30, item_id=items[0])
    return written


def _table(rows: list[tuple[str, DecisionRates]]) -> str:
    head = (
        "| setting | τ (source) | mSPRT FPR | group-seq. FPR | mSPRT power | group-seq. power | fixed-horizon power "
        "| mSPRT mean stop | CS / fixed CI width (A/A) |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for label, r in rows:
        lines.append(
            f"| {label} | {r.tau:.4g} ({r.tau_source}) | {r.msprt_fpr:.3f} | {r.group_sequential_fpr:.3f} | "
            f"{r.msprt_power:.3f} | {r.group_sequential_power:.3f} | {r.fixed_horizon_power:.3f} | "
            f"{r.msprt_mean_stop_fraction:.2f} | {r.ci_width_ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`python -m recsys.experiments.simulation`: the FPR/power table of docs/experiments.md."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--runs", type=int, default=1000, help="A/A runs and A/B runs per setting")
    ap.add_argument("--units", type=int, default=10_000, help="units per arm = max_units_per_variant")
    ap.add_argument("--lift", type=float, default=0.10, help="relative lift of the A/B runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rows", default="", help="comma list of row numbers (1-based) to run; default all")
    ap.add_argument("--aa-only", action="store_true", help="A/A runs only (false-positive rates)")
    args = ap.parse_args(argv)
    plan = {"max_units_per_variant": args.units, "looks": 10, "look_every_units": max(2, args.units // 20)}
    settings: list[tuple[str, Experiment, int]] = [
        (
            "CTR 0.10, tau_relative 0.05 (old default), pre-period",
            simulation_experiment("ctr", tau_relative=0.05, **plan),
            2000,
        ),
        ("CTR 0.10, tau_relative 0.1 (default), pre-period", simulation_experiment("ctr", **plan), 2000),
        ("CTR 0.10, tau_relative 0.2, pre-period", simulation_experiment("ctr", tau_relative=0.2, **plan), 2000),
        ("CTR 0.10, default, no pre-period (no tau: group sequential only)", simulation_experiment("ctr", **plan), 0),
        ("conversion 0.02, default, pre-period", simulation_experiment("conversion", **plan), 2000),
        ("reward (purchase value), default, pre-period", simulation_experiment("reward", **plan), 2000),
    ]
    rows = []
    wanted = {int(r) for r in args.rows.split(",") if r} or set(range(1, len(settings) + 1))
    for i, (label, experiment, pre) in enumerate(settings):
        if i + 1 not in wanted:
            continue
        rates = simulate_decisions(
            experiment, runs=args.runs, units_per_arm=args.units, lift=args.lift, pre_period_units=pre,
            seed=args.seed + i, power=not args.aa_only,
        )
        print(f"{label}: {rates.to_dict()}", flush=True)
        rows.append((label, rates))
    print(f"\n{args.runs} A/A + {args.runs} A/B runs per row, {args.units} units per arm, lift {args.lift:+.0%} "
          f"relative, alpha 0.05, mSPRT looks every {plan['look_every_units']} units, group sequential 10 looks\n")
    print(_table(rows))


if __name__ == "__main__":
    main()
