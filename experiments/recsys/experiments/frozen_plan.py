"""The frozen analysis plan: written once when an experiment starts, read by every later report.

A sequential test keeps its error rate only if what it depends on (τ, the looks, the α spending,
the metrics) is fixed before the data it judges. Recomputing them from the log at every report run
lets them drift: deleting old log files changed the pre-period τ mid-experiment, and editing the
config's analysis section re-planned silently. So the first report of an experiment writes the plan
to ``<plans dir>/<experiment>/v1.json`` (create-only: never overwritten), every later report reads
the newest version and analyses with *its* settings, whatever the config says now, and a change
needs an explicit ``recsys experiments report --replan "reason"``, which writes v2 with the reason
and the version it replaces; the report prints the plan id (``name@vN-<digest>``) before any decision.

The default plans directory sits next to the config file: ``<config dir>/<config stem>.plans/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.experiments.config import Analysis, Experiment, slugify
from recsys.experiments.exposure_log import LogFrames
from recsys.experiments.plan import TauPlan, group_sequential_look_units, plan_tau

ALPHA_SPENDING = "Lan-DeMets O'Brien-Fleming type, each side 2 - 2*Phi(z_(1-alpha/4)/sqrt(t)) (gsDesign sfLDOF)"


@dataclass(frozen=True)
class FrozenPlan:
    """Everything the tests of one experiment depend on, fixed before its data."""

    experiment: str
    version: int
    created_at: str
    analysis: dict[str, Any]  # the experiment's `Analysis` section as frozen; reports analyse with this
    tau: float | None
    tau_source: str  # config | baseline | pre-period | none
    tau_detail: str
    alpha_per_comparison: float
    comparisons: list[str]
    gs_look_units: list[int]
    alpha_spending: str = ALPHA_SPENDING
    metrics: list[str] = field(default_factory=lambda: ["ctr", "conversion", "reward"])
    replanned_from: int | None = None
    replan_reason: str | None = None

    @property
    def digest(self) -> str:
        body = {k: v for k, v in asdict(self).items() if k not in ("created_at", "version")}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def plan_id(self) -> str:
        return f"{self.experiment}@v{self.version}-{self.digest}"

    @property
    def tau_plan(self) -> TauPlan | None:
        return None if self.tau is None else TauPlan(self.tau, self.tau_source, self.tau_detail)

    def analysis_settings(self) -> Analysis:
        return Analysis.model_validate(self.analysis)

    def apply(self, experiment: Experiment) -> Experiment:
        """The experiment with the plan's analysis section (the config's may have been edited since)."""
        return experiment.model_copy(update={"analysis": self.analysis_settings()})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan_id"] = self.plan_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrozenPlan:
        data = {k: v for k, v in data.items() if k != "plan_id"}
        return cls(**data)


def make_plan(
    experiment: Experiment,
    frames: LogFrames,
    *,
    version: int = 1,
    replanned_from: int | None = None,
    replan_reason: str | None = None,
) -> FrozenPlan:
    """Resolve the plan from the config and the data *before* the experiment's start (never its own data).

    τ comes from ``analysis.tau``, ``tau_relative × baseline`` or the pre-period; without any of
    them the plan has no τ and the mSPRT does not run (the group-sequential test needs none).
    """
    a = experiment.analysis
    tau = plan_tau(experiment, frames, events=None)
    treatments = [v.name for v in experiment.variants if v.name != experiment.control_variant]
    return FrozenPlan(
        experiment=experiment.name,
        version=version,
        created_at=datetime.now(tz=UTC).isoformat(timespec="seconds"),
        analysis=a.model_dump(mode="json"),
        tau=None if tau is None else float(tau.tau),
        tau_source="none" if tau is None else tau.source,
        tau_detail=(
            "no tau: set analysis.tau or analysis.baseline, or log pre-period traffic and --replan"
            if tau is None
            else tau.detail
        ),
        alpha_per_comparison=a.alpha / max(1, len(treatments)),
        comparisons=[f"{t} vs {experiment.control_variant}" for t in treatments],
        gs_look_units=group_sequential_look_units(experiment),
        replanned_from=replanned_from,
        replan_reason=replan_reason,
    )


class PlanStore:
    """Versioned plan files: ``<root>/<experiment>/v<N>.json``, each written once (O_EXCL)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def beside(cls, config_path: str | Path) -> PlanStore:
        path = Path(config_path)
        return cls(path.parent / f"{path.stem}.plans")

    def _dir(self, experiment: str) -> Path:
        return self.root / slugify(experiment)

    def versions(self, experiment: str) -> list[int]:
        folder = self._dir(experiment)
        if not folder.is_dir():
            return []
        found = (re.fullmatch(r"v(\d+)\.json", p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, experiment: str, version: int | None = None) -> FrozenPlan | None:
        versions = self.versions(experiment)
        if not versions:
            return None
        version = versions[-1] if version is None else version
        path = self._dir(experiment) / f"v{version}.json"
        try:
            return FrozenPlan.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable plan file ({exc}); restore it from version control") from None

    def _write(self, plan: FrozenPlan) -> FrozenPlan:
        folder = self._dir(plan.experiment)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"v{plan.version}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # a plan is never overwritten
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(plan.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        return plan

    def freeze(self, experiment: Experiment, frames: LogFrames) -> FrozenPlan:
        """The experiment's current plan; written as v1 if it has none yet."""
        existing = self.load(experiment.name)
        if existing is not None:
            return existing
        try:
            return self._write(make_plan(experiment, frames))
        except FileExistsError:  # another report froze it first: theirs is the plan
            return self.load(experiment.name)  # type: ignore[return-value]

    def replan(self, experiment: Experiment, frames: LogFrames, reason: str) -> FrozenPlan:
        """Write the next version from the config as it is now, recording why and what it replaces."""
        if not reason.strip():
            raise ValueError("--replan needs a reason")
        versions = self.versions(experiment.name)
        previous = versions[-1] if versions else None
        plan = make_plan(
            experiment, frames, version=(previous or 0) + 1, replanned_from=previous, replan_reason=reason.strip()
        )
        return self._write(plan)


def plan_drift(plan: FrozenPlan, experiment: Experiment) -> list[str]:
    """Analysis settings the config changed since the plan was frozen (the report ignores them)."""
    now = experiment.analysis.model_dump(mode="json")
    frozen = plan.analysis_settings().model_dump(mode="json")  # a setting added since: the plan has its default
    return sorted(k for k in set(now) | set(frozen) if now.get(k) != frozen.get(k))


__all__ = ["FrozenPlan", "PlanStore", "make_plan", "plan_drift"]
