"""Turns a config plus a log into per-experiment verdicts: metrics, SRM, and sequential decisions.

Everything a test depends on comes from the plan (`recsys.experiments.plan`), not from when the
report runs: τ is resolved once per experiment, the mSPRT looks each time both arms gained
``look_every_units`` units, and the group-sequential test looks at the planned fractions k/K of
``max_units_per_variant``. At each look the metrics are recomputed from the units exposed by then.
This is also the code path of the A/A and power simulations (`simulation.simulate_decisions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.experiments.config import Experiment, ExperimentsConfig
from recsys.experiments.exposure_log import LogFrames
from recsys.experiments.metrics import SrmResult, UnitEvents, VariantMetrics, srm_check
from recsys.experiments.plan import (
    TauPlan,
    group_sequential_look_units,
    milestone_times,
    msprt_look_units,
    plan_tau,
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

    @property
    def decision(self) -> Decision:
        return self.path.decision


@dataclass
class ExperimentAnalysis:
    experiment: Experiment
    metrics: dict[str, VariantMetrics]
    srm: SrmResult
    conflicting_units: int
    comparisons: list[Comparison] = field(default_factory=list)
    tau_plan: TauPlan | None = None

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def overall_label(self) -> str:
        """Experiment-level call: a winner if any comparison has one, 'continue' while any continues."""
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
    """Exposed units and exposures per variant (units by their first variant)."""
    ex = frames.exposures[frames.exposures["experiment"] == experiment]
    if ex.empty:
        return {}
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
    counts = events.counts() if events is not None else exposure_counts(frames, experiment.name)
    return srm_check({v: c["units"] for v, c in counts.items()}, expected_shares(experiment))


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


def _looks_at(events: UnitEvents, times: list[float], control: str, treatment: str, metric: str) -> list[Look]:
    looks = []
    for cut in times:
        snap = events.metrics_at(cut)
        if control in snap and treatment in snap:
            c, t = snap[control], snap[treatment]
            looks.append(Look(cut, ArmSummary(c.units, *c.estimate(metric)), ArmSummary(t.units, *t.estimate(metric))))
    return looks


def analyze_experiment(experiment: Experiment, frames: LogFrames) -> ExperimentAnalysis:
    """Metrics, SRM and both sequential tests at the planned looks (the report's and the simulations' path)."""
    a = experiment.analysis
    events = UnitEvents(frames, experiment.name, a.reward_events)
    metrics = events.metrics_at()
    analysis = ExperimentAnalysis(experiment, metrics, srm_for(frames, experiment, events), events.conflicting)
    control = experiment.control_variant
    if events.empty or control not in metrics:
        return analysis
    analysis.tau_plan = tau = plan_tau(experiment, frames, events)
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
            looks = _looks_at(events, times, control, variant.name, a.primary_metric)
            if looks:
                paths[method] = test.run(looks, control, variant.name)
            else:
                first = schedule[method][0] if schedule[method] else a.look_every_units
                reason = f"first planned look at {first} units per arm (have {available})"
                paths[method] = undecided_path(method, control, variant.name, reason)
        if "msprt" not in paths:
            reason = (
                f"no tau yet: set analysis.tau or analysis.baseline, log pre-period traffic, or wait for the "
                f"first look at {a.look_every_units} units per arm"
            )
            paths["msprt"] = undecided_path("msprt", control, variant.name, reason)
        primary = a.method if a.method in paths else "msprt"
        analysis.comparisons.append(Comparison(variant.name, paths[primary], {m: p.decision for m, p in paths.items()}))
    return analysis


def analyze(config: ExperimentsConfig, frames: LogFrames) -> list[ExperimentAnalysis]:
    return [analyze_experiment(experiment, frames) for experiment in config.experiments]
