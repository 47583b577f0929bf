"""Turns a config plus a log into per-experiment verdicts: metrics, SRM, and sequential decisions.

The log is cut at ``analysis.looks`` evenly spaced times between the first and last exposure; at
each cut the metrics are recomputed from the units exposed so far. The always-valid mSPRT makes
any number of such looks safe; the group-sequential test spends alpha at each look it sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys.experiments.config import Experiment, ExperimentsConfig
from recsys.experiments.exposure_log import LogFrames
from recsys.experiments.metrics import SrmResult, VariantMetrics, srm_check, unit_table, variant_metrics
from recsys.experiments.sequential import (
    ArmSummary,
    Decision,
    GroupSequentialTest,
    Look,
    MsprtTest,
    SequentialPath,
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


def srm_for(frames: LogFrames, experiment: Experiment) -> SrmResult:
    counts = exposure_counts(frames, experiment.name)
    return srm_check({v: c["units"] for v, c in counts.items()}, expected_shares(experiment))


def _tests(experiment: Experiment) -> dict[str, MsprtTest | GroupSequentialTest]:
    a = experiment.analysis
    tests: dict[str, MsprtTest | GroupSequentialTest] = {
        "msprt": MsprtTest(
            alpha=a.alpha / max(1, len(experiment.variants) - 1),  # Bonferroni over treatments
            tau=a.tau,
            tau_relative=a.tau_relative,
            equivalence_margin=a.equivalence_margin,
            max_units_per_variant=a.max_units_per_variant,
            higher_is_better=a.higher_is_better,
        )
    }
    if a.max_units_per_variant is not None:
        tests["group_sequential"] = GroupSequentialTest(
            max_units_per_variant=a.max_units_per_variant,
            alpha=a.alpha / max(1, len(experiment.variants) - 1),
            higher_is_better=a.higher_is_better,
        )
    return tests


def analyze_experiment(experiment: Experiment, frames: LogFrames) -> ExperimentAnalysis:
    a = experiment.analysis
    table, conflicting = unit_table(frames, experiment.name, a.reward_events)
    metrics = variant_metrics(table)
    analysis = ExperimentAnalysis(experiment, metrics, srm_for(frames, experiment), conflicting)
    control = experiment.control_variant
    if table.empty or control not in metrics:
        return analysis
    ts = frames.exposures.loc[frames.exposures["experiment"] == experiment.name, "ts"]
    cuts = np.linspace(ts.min(), ts.max(), a.looks + 1)[1:] if a.looks > 1 else np.array([ts.max()])
    snapshots = []
    for cut in cuts:
        snap_table, _ = unit_table(frames, experiment.name, a.reward_events, until=float(cut))
        snapshots.append((float(cut), variant_metrics(snap_table)))
    tests = _tests(experiment)
    for variant in experiment.variants:
        if variant.name == control or variant.name not in metrics:
            continue
        looks = []
        for cut, snap in snapshots:
            if control in snap and variant.name in snap:
                c, t = snap[control], snap[variant.name]
                looks.append(
                    Look(
                        cut,
                        ArmSummary(c.units, *c.estimate(a.primary_metric)),
                        ArmSummary(t.units, *t.estimate(a.primary_metric)),
                    )
                )
        paths = {method: test.run(looks, control, variant.name) for method, test in tests.items()}
        primary = a.method if a.method in paths else "msprt"
        analysis.comparisons.append(Comparison(variant.name, paths[primary], {m: p.decision for m, p in paths.items()}))
    return analysis


def analyze(config: ExperimentsConfig, frames: LogFrames) -> list[ExperimentAnalysis]:
    return [analyze_experiment(experiment, frames) for experiment in config.experiments]
