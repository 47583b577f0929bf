"""Turns a config plus a log into per-experiment verdicts: metrics, SRM, and sequential decisions.

Everything a test depends on comes from the plan (`recsys.experiments.plan`), not from when the
report runs: τ is resolved once per experiment, the mSPRT looks each time both arms gained
``look_every_units`` units, and the group-sequential test looks at the planned fractions k/K of
``max_units_per_variant``. At each look the metrics are recomputed from the units exposed by then.
This is also the code path of the A/A and power simulations (`simulation.simulate_decisions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from recsys.experiments.config import Experiment, ExperimentsConfig
from recsys.experiments.exposure_log import LogFrames
from recsys.experiments.frozen_plan import FrozenPlan, make_plan, plan_drift
from recsys.experiments.metrics import (
    FallbackGuardrail,
    SrmResult,
    UnitEvents,
    VariantMetrics,
    assigned_arms,
    srm_check,
)
from recsys.experiments.plan import (
    TauPlan,
    group_sequential_look_units,
    milestone_times,
    msprt_look_units,
)
from recsys.experiments.sequential import (
    ArmSummary,
    Decision,
    GroupSequentialTest,
    Look,
    MsprtTest,
    SequentialPath,
    undecided_path,
)


@dataclass
class Comparison:
    """One treatment against the control: the primary method's path and both methods' decisions."""

    treatment: str
    path: SequentialPath
    decisions: dict[str, Decision]  # keyed by method ("msprt", "group_sequential")
    paths: dict[str, SequentialPath] = field(default_factory=dict)  # every method's looks

    @property
    def decision(self) -> Decision:
        return self.path.decision

    def to_dict(self) -> dict[str, Any]:
        looks = {
            method: [
                {"ts": t, "estimate": e, "lower": lo, "upper": hi, "p_value": p}
                for t, e, lo, hi, p in zip(path.ts, path.estimate, path.lower, path.upper, path.p_value, strict=True)
            ]
            for method, path in self.paths.items()
        }
        return _clean(
            {
                "treatment": self.treatment,
                "primary_method": self.decision.method,
                "decisions": {m: d.to_dict() for m, d in self.decisions.items()},
                "looks": looks,
            }
        )


def _clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class ExperimentAnalysis:
    experiment: Experiment
    metrics: dict[str, VariantMetrics]
    srm: SrmResult
    conflicting_units: int
    comparisons: list[Comparison] = field(default_factory=list)
    tau_plan: TauPlan | None = None
    fallback: FallbackGuardrail | None = None
    plan: FrozenPlan | None = None
    plan_drift: list[str] = field(default_factory=list)  # config analysis keys edited since the plan froze

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def decision_withheld(self) -> str | None:
        """Why no ship/stop decision may be printed (None when one may): the SRM gate.

        A sample ratio mismatch means the arms are not the random split the config asked for (units
        lost or gained unevenly by assignment, targeting or logging), so any difference between them
        may be that selection rather than the treatment.
        """
        srm = self.srm
        if not srm.mismatch:
            return None
        threshold = self.experiment.analysis.srm_p_threshold
        observed = ", ".join(f"{k}={v}" for k, v in srm.observed.items())
        return (
            f"sample ratio mismatch (SRM p = {srm.p_value:.3g} < {threshold:g}; units {observed}): the arms are "
            "not the configured random split, so their difference may be selection, not the treatment. Find "
            "where units are lost or gained (assignment, targeting, logging) before deciding"
        )

    @property
    def overall_label(self) -> str:
        """Experiment-level call: a winner if any comparison has one, 'continue' while any continues.

        ``withheld: ...`` instead of any ship/stop call when the SRM gate is closed.
        """
        if self.decision_withheld is not None:
            return f"withheld: {self.decision_withheld}"
        return self.raw_label

    def to_dict(self) -> dict[str, Any]:
        """Everything the report shows, as plain data (for the web console and ``--json``)."""
        e = self.experiment
        return _clean(
            {
                "experiment": e.name,
                "layer": e.layer,
                "control": e.control_variant,
                "primary_metric": e.analysis.primary_metric,
                "method": e.analysis.method,
                "plan": self.plan.to_dict() if self.plan else None,
                "plan_drift": list(self.plan_drift),
                "srm": self.srm.to_dict(),
                "fallback": self.fallback.to_dict() if self.fallback else None,
                "decision_withheld": self.decision_withheld,
                "decision": self.overall_label,
                "metrics": {v: m.to_dict() for v, m in self.metrics.items()},
                "conflicting_units": self.conflicting_units,
                "comparisons": [c.to_dict() for c in self.comparisons],
            }
        )

    @property
    def raw_label(self) -> str:
        """The tests' call without the SRM gate (what the simulations count)."""
        labels = [c.decision.label for c in self.comparisons]
        if not labels:
            return "continue"
        decisions = [c.decision for c in self.comparisons]
        winners = [d for d in decisions if d.winner and d.winner != d.control]
        if winners:
            sign = 1.0 if self.experiment.analysis.higher_is_better else -1.0
            return max(winners, key=lambda d: sign * d.estimate).label
        if any(label == "continue" for label in labels):
            return "continue"
        if any(c.decision.winner == c.decision.control for c in self.comparisons):
            return f"stop: {self.experiment.control_variant} wins"
        return "stop: no difference"


def exposure_counts(frames: LogFrames, experiment: str) -> dict[str, dict[str, int]]:
    """Exposed units and exposures per assigned variant (units by their first; fallback in its assigned arm)."""
    ex = frames.exposures[frames.exposures["experiment"] == experiment]
    if ex.empty:
        return {}
    ex = ex.assign(variant=assigned_arms(ex))
    first = ex.sort_values("ts", kind="stable").groupby("unit_id", sort=False)["variant"].first()
    units = first.value_counts()
    exposures = ex["variant"].value_counts()
    return {
        str(v): {"units": int(units.get(v, 0)), "exposures": int(exposures.get(v, 0))}
        for v in sorted(set(units.index) | set(exposures.index))
    }


def expected_shares(experiment: Experiment) -> dict[str, float]:
    total = sum(v.weight for v in experiment.variants)
    return {v.name: (v.weight / total if total else 0.0) for v in experiment.variants}


def srm_for(frames: LogFrames, experiment: Experiment, events: UnitEvents | None = None) -> SrmResult:
    """SRM on assignments: every unit counted in its assigned arm, before any filtering."""
    counts = events.counts() if events is not None else exposure_counts(frames, experiment.name)
    return srm_check(
        {v: c["units"] for v, c in counts.items()}, expected_shares(experiment), experiment.analysis.srm_p_threshold
    )


def _tests(experiment: Experiment, tau: TauPlan | None) -> dict[str, MsprtTest | GroupSequentialTest]:
    a = experiment.analysis
    alpha = a.alpha / max(1, len(experiment.variants) - 1)  # Bonferroni over treatments
    tests: dict[str, MsprtTest | GroupSequentialTest] = {}
    if tau is not None:
        tests["msprt"] = MsprtTest(
            tau=tau.tau,
            tau_source=tau.source,
            alpha=alpha,
            equivalence_margin=a.equivalence_margin,
            max_units_per_variant=a.max_units_per_variant,
            higher_is_better=a.higher_is_better,
        )
    if a.max_units_per_variant is not None:
        tests["group_sequential"] = GroupSequentialTest(
            max_units_per_variant=a.max_units_per_variant, alpha=alpha, higher_is_better=a.higher_is_better
        )
    return tests


def cuped_window(experiment: Experiment) -> tuple[float, float] | None:
    """The pre-period ``[start - pre_period_days, start)`` whose traffic gives CUPED covariates, if asked for."""
    a = experiment.analysis
    if not a.cuped or experiment.start is None:
        return None
    start = experiment.start.timestamp()
    return (start - a.pre_period_days * 86_400.0, start)


def _looks_at(
    events: UnitEvents, times: list[float], control: str, treatment: str, metric: str, cuped: bool = False
) -> list[Look]:
    looks = []
    for cut in times:
        snap = events.metrics_at(cut, cuped=cuped)
        if control in snap and treatment in snap:
            c, t = snap[control], snap[treatment]
            arms = (ArmSummary(m.units, *m.estimate(metric, cuped)) for m in (c, t))
            looks.append(Look(cut, *arms))
    return looks


def analyze_experiment(
    experiment: Experiment, frames: LogFrames, plan: FrozenPlan | None = None
) -> ExperimentAnalysis:
    """Metrics, SRM and both sequential tests at the planned looks (the report's and the simulations' path).

    ``plan``: the experiment's frozen plan (`frozen_plan.PlanStore`); its analysis settings replace the
    config's. Without one, the plan is made in memory from the config and the pre-start data.
    """
    drift: list[str] = []
    if plan is None:
        plan = make_plan(experiment, frames)
    else:
        drift = plan_drift(plan, experiment)
        experiment = plan.apply(experiment)
    a = experiment.analysis
    window = cuped_window(experiment)
    events = UnitEvents(frames, experiment.name, a.reward_events, pre_window=window,
                        attribution_window_s=a.attribution_window_s)
    metrics = events.metrics_at(cuped=window is not None)
    analysis = ExperimentAnalysis(experiment, metrics, srm_for(frames, experiment, events), events.conflicting)
    analysis.plan, analysis.plan_drift = plan, drift
    control = experiment.control_variant
    if not events.empty:
        analysis.fallback = events.fallback_guardrail(control)
    if events.empty or control not in metrics:
        return analysis
    analysis.tau_plan = tau = plan.tau_plan
    tests = _tests(experiment, tau)
    control_ts = events.arm_first_ts(control)
    gs_units = group_sequential_look_units(experiment)
    for variant in experiment.variants:
        if variant.name == control or variant.name not in metrics:
            continue
        treatment_ts = events.arm_first_ts(variant.name)
        available = min(len(control_ts), len(treatment_ts))
        schedule = {
            "msprt": msprt_look_units(experiment, available),
            "group_sequential": gs_units,
        }
        paths: dict[str, SequentialPath] = {}
        for method, test in tests.items():
            times = milestone_times(control_ts, treatment_ts, schedule[method])
            looks = _looks_at(events, times, control, variant.name, a.primary_metric, cuped=window is not None)
            if looks:
                paths[method] = test.run(looks, control, variant.name)
            else:
                first = schedule[method][0] if schedule[method] else a.look_every_units
                reason = f"first planned look at {first} units per arm (have {available})"
                paths[method] = undecided_path(method, control, variant.name, reason)
        if "msprt" not in paths:
            reason = f"mSPRT not run: the frozen plan has {plan.tau_detail}"
            paths["msprt"] = undecided_path("msprt", control, variant.name, reason)
        primary = a.method if a.method in paths else "msprt"
        analysis.comparisons.append(
            Comparison(variant.name, paths[primary], {m: p.decision for m, p in paths.items()}, paths)
        )
    return analysis


def experiment_report(
    experiment: Experiment, frames: LogFrames, plan: FrozenPlan | None = None
) -> ExperimentAnalysis:
    """The console's entry point: the analysis the CLI report prints, as an object (``.to_dict()``)."""
    return analyze_experiment(experiment, frames, plan)


def analyze(config: ExperimentsConfig, frames: LogFrames) -> list[ExperimentAnalysis]:
    return [analyze_experiment(experiment, frames) for experiment in config.experiments]
