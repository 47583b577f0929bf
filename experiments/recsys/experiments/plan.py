"""The analysis plan of one experiment: the mSPRT mixture sd τ and the looks, fixed before the data.

Both sequential tests only keep their promise when what they depend on is not chosen from the
data being tested:

* **τ.** The mSPRT statistic is a martingale under H0 only for a fixed mixing distribution. τ is
  resolved once, in this order, and the report prints the source:
  1. ``analysis.tau`` (absolute, on the metric's scale);
  2. ``analysis.tau_relative × analysis.baseline`` (the baseline from past data, written in the config);
  3. ``analysis.tau_relative × the metric in the pre-period``: every logged exposure (any experiment,
     the holdout) and its outcomes in the ``pre_period_days`` before the experiment's ``start``;
  4. otherwise there is no τ and the mSPRT does not run (the group-sequential test needs none). An
     earlier version took τ from the pooled metric at the first look, i.e. from the experiment's own
     data; that is gone. The frozen plan (`frozen_plan`) stores τ, so deleting old log files later
     cannot change it.
* **Looks.** Looks sit at unit counts, not at report times, so running the report twice never
  re-cuts the history: the mSPRT looks each time both arms have gained ``look_every_units`` more
  units; the group-sequential test looks when both arms reach ``k/looks × max_units_per_variant``
  (k = 1..looks), so its boundaries are those of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.experiments.config import Experiment
from recsys.experiments.exposure_log import LogFrames
from recsys.experiments.metrics import UnitEvents, VariantMetrics

MIN_PRE_PERIOD_UNITS = 100
DAY_S = 86_400.0


@dataclass(frozen=True)
class TauPlan:
    """τ for the experiment's mSPRT and where it came from (``config``, ``baseline``, ``pre-period``, ...)."""

    tau: float
    source: str
    detail: str

    @property
    def pre_registered(self) -> bool:
        return self.source in ("config", "baseline", "pre-period")


def _estimate(metrics: VariantMetrics, metric: str) -> float:
    return float(metrics.estimate(metric)[0])


def pre_period_metric(experiment: Experiment, frames: LogFrames) -> tuple[float, int] | None:
    """The primary metric over units logged in the ``pre_period_days`` before ``start`` (any experiment).

    Units are users; requests are de-duplicated by ``request_id`` (one request may be logged once per
    layer). Returns ``(estimate, units)`` or None without a start date or enough units.
    """
    a = experiment.analysis
    if experiment.start is None or frames.exposures.empty:
        return None
    start = experiment.start.timestamp()
    since = start - a.pre_period_days * DAY_S
    ex = frames.exposures
    ex = ex[(ex["ts"] >= since) & (ex["ts"] < start)]
    if ex.empty:
        return None
    ex = ex.drop_duplicates(subset=["unit_id", "request_id"])
    ex = ex.assign(experiment="__pre_period__")
    oc = frames.outcomes
    oc = oc[(oc["ts"] >= since) & (oc["ts"] < start)]
    events = UnitEvents(LogFrames(ex, oc), "__pre_period__", a.reward_events)
    n = len(events.unit_ids)
    if n < MIN_PRE_PERIOD_UNITS:
        return None
    everyone = events.metrics_at()
    pooled = _pool(list(everyone.values()))
    value = _estimate(pooled, a.primary_metric)
    return (value, n) if np.isfinite(value) else None


def _pool(parts: list[VariantMetrics]) -> VariantMetrics:
    """Rebuild pooled metrics from per-variant sums (ratio estimates only need the totals)."""
    units = sum(p.units for p in parts)
    reward_total = sum(p.reward_mean * p.units for p in parts)
    return VariantMetrics(
        variant="pooled",
        units=units,
        exposures=sum(p.exposures for p in parts),
        clicks=sum(p.clicks for p in parts),
        ctr=sum(p.clicks for p in parts) / max(1, sum(p.exposures for p in parts)),
        ctr_var=float("nan"),
        purchasers=sum(p.purchasers for p in parts),
        conversion=sum(p.purchasers for p in parts) / max(1, units),
        conversion_var=float("nan"),
        reward_mean=reward_total / max(1, units),
        reward_var=float("nan"),
    )


def plan_tau(experiment: Experiment, frames: LogFrames, events: UnitEvents | None = None) -> TauPlan | None:
    """Resolve τ from what was known before the experiment (see the module docstring); None otherwise.

    ``events`` is ignored (kept for callers of the old signature): τ never comes from the experiment's
    own data. `frozen_plan.make_plan` calls this once and the plan file keeps the result.
    """
    a = experiment.analysis
    if a.tau is not None:
        return TauPlan(a.tau, "config", "analysis.tau")
    rel = a.tau_relative
    if a.baseline is not None:
        return TauPlan(rel * a.baseline, "baseline", f"{rel:g} x analysis.baseline {a.baseline:g}")
    pre = pre_period_metric(experiment, frames)
    if pre is not None and pre[0] > 0:
        value, units = pre
        return TauPlan(
            rel * value,
            "pre-period",
            f"{rel:g} x {a.primary_metric} {value:.4g} over {units} units in the "
            f"{a.pre_period_days:g} days before start",
        )
    return None


def first_look_time(events: UnitEvents, experiment: Experiment) -> float | None:
    """When every variant first had ``look_every_units`` units (the first mSPRT look of every comparison)."""
    m = experiment.analysis.look_every_units
    times = []
    for variant in experiment.variants:
        arm = events.arm_first_ts(variant.name)
        if len(arm) < m:
            return None
        times.append(arm[m - 1])
    return float(max(times))


def milestone_times(control_ts: np.ndarray, treatment_ts: np.ndarray, units: list[int]) -> list[float]:
    """For each unit count m (increasing), the time both arms first had m units; stops at the first unreached."""
    out = []
    for m in units:
        if m < 1 or len(control_ts) < m or len(treatment_ts) < m:
            break
        out.append(float(max(control_ts[m - 1], treatment_ts[m - 1])))
    return out


def msprt_look_units(experiment: Experiment, available: int) -> list[int]:
    """Unit counts per arm at which the mSPRT looks: every ``look_every_units`` up to what the data hold."""
    step = experiment.analysis.look_every_units
    return list(range(step, available + 1, step))


def group_sequential_look_units(experiment: Experiment) -> list[int]:
    """Unit counts per arm of the planned group-sequential looks: ``ceil(k/K × N)``, k = 1..K."""
    a = experiment.analysis
    if a.max_units_per_variant is None:
        return []
    k = np.arange(1, a.looks + 1)
    return [int(u) for u in np.ceil(k * a.max_units_per_variant / a.looks)]


__all__ = [
    "TauPlan",
    "first_look_time",
    "group_sequential_look_units",
    "milestone_times",
    "msprt_look_units",
    "plan_tau",
    "pre_period_metric",
]
