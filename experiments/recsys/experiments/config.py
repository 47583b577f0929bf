"""Experiment configuration: the YAML schema, its validation and its loader.

One `ExperimentsConfig` describes every running experiment. It is validated in two passes:
pydantic checks types and ranges field by field, then `_semantic_problems` checks the rules
that span fields (weights within lanes, layer shares, unique names). Both passes report the
*path* of the offending field (``experiments[ranker_v2].variants[treatment].weight``) and the
file, because the people editing this file are usually mid-ramp and in a hurry.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recsys.experiments.variant_params import RerankingParams

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
EVENT_TYPES = ("click", "purchase", "rating", "view")
HOLDOUT = "holdout"
_EPS = 1e-9

Scalar = str | int | float | bool


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Targeting(_Strict):
    """Which units an experiment accepts; a unit outside targeting gets no assignment in that layer."""

    segment: Literal["new", "returning", "all"] = "all"
    segment_attribute: str = Field("segment", description="unit attribute holding 'new' or 'returning'")
    attributes: dict[str, list[Scalar]] = Field(
        default_factory=dict, description="every key must be present with one of the listed values"
    )

    @property
    def is_everyone(self) -> bool:
        return self.segment == "all" and not self.attributes


class Variant(_Strict):
    """One arm: the model versions and re-ranking settings its units are served with."""

    name: str = Field(pattern=NAME_PATTERN)
    weight: float = Field(ge=0, le=100, description="percent of the experiment's slot in this variant")
    lane: float | None = Field(
        None, gt=0, le=100, description="reserved bucket range in percent; weight may grow up to it"
    )
    retrieval_version: str | None = None
    ranking_version: str | None = None
    reranking: RerankingParams = Field(
        default_factory=RerankingParams, description="re-ranking overrides; the schema serving reads"
    )
    description: str = ""


class Analysis(_Strict):
    """How the experiment is judged: the metric, the test and its error budget."""

    primary_metric: Literal["ctr", "conversion", "reward"] = "ctr"
    method: Literal["msprt", "group_sequential"] = "msprt"
    alpha: float = Field(0.05, gt=0, lt=0.5)
    tau: float | None = Field(
        None, gt=0, description="mSPRT mixture sd on the metric's absolute scale, fixed for the whole experiment"
    )
    tau_relative: float = Field(
        0.1, gt=0, le=10, description="if tau is unset: tau = tau_relative x baseline (config, else pre-period)"
    )
    baseline: float | None = Field(
        None, gt=0, description="expected control value of the primary metric, from data before the experiment"
    )
    pre_period_days: float = Field(
        14.0, gt=0, le=365, description="window before `start` whose logged traffic gives the baseline"
    )
    equivalence_margin: float | None = Field(
        None, gt=0, description="stop for 'no difference' once the confidence sequence fits in +-margin"
    )
    max_units_per_variant: int | None = Field(
        None, gt=0, description="sample size cap; also the information horizon of the group-sequential test"
    )
    looks: int = Field(
        10, ge=1, le=200, description="group-sequential looks, at k/looks of max_units_per_variant (k = 1..looks)"
    )
    look_every_units: int = Field(
        200, ge=2, description="the mSPRT looks each time both arms have this many more units"
    )
    reward_events: list[Literal["click", "purchase", "rating", "view"]] = Field(default_factory=lambda: ["purchase"])
    higher_is_better: bool = True
    srm_p_threshold: float = Field(
        0.001, gt=0, lt=1, description="no ship/stop decision is printed while the SRM test's p is below this"
    )
    cuped: bool = Field(
        False, description="adjust each metric by the unit's own pre-period value (CUPED); needs `start`"
    )
    mde: float | None = Field(
        None, gt=0, description="minimum detectable effect, relative to the baseline (0.05 = 5%); recorded in the plan"
    )
    attribution_window_s: float | None = Field(
        86_400.0, gt=0, description="an outcome counts for its unit only if it is at most this long after one of "
        "the unit's exposures in the experiment (null: any time after the first exposure)"
    )


class Experiment(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    layer: str = Field("default", pattern=NAME_PATTERN)
    layer_share: float | None = Field(
        None, gt=0, le=100, description="percent of the layer's buckets reserved for this experiment"
    )
    salt: str | None = Field(None, description="variant-hash salt; defaults to the experiment name")
    start: datetime | None = None
    stop: datetime | None = None
    targeting: Targeting = Field(default_factory=Targeting)
    control: str | None = Field(None, description="control variant name; defaults to the first variant")
    variants: list[Variant] = Field(min_length=2)
    analysis: Analysis = Field(default_factory=Analysis)

    @field_validator("start", "stop")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """Naive datetimes are read as UTC so that every replica agrees on the window."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def effective_salt(self) -> str:
        return self.salt if self.salt is not None else self.name

    @property
    def control_variant(self) -> str:
        return self.control or self.variants[0].name

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"experiment {self.name!r} has no variant {name!r}")

    def lanes(self) -> list[float]:
        """Lane width per variant in percent: explicit `lane`, else an equal split of what is left."""
        explicit = sum(v.lane for v in self.variants if v.lane is not None)
        implicit = [v for v in self.variants if v.lane is None]
        rest = max(0.0, 100.0 - explicit) / len(implicit) if implicit else 0.0
        return [v.lane if v.lane is not None else rest for v in self.variants]

    def is_active(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.stop is None or now < self.stop)


class Layer(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    salt: str | None = Field(None, description="layer-hash salt; defaults to '<config salt>/<layer name>'")
    description: str = ""


class Holdout(_Strict):
    percent: float = Field(0.0, ge=0, lt=100, description="global holdout: these units get defaults")
    salt: str = "holdout"


class ExperimentsConfig(_Strict):
    version: Literal[1] = 1
    salt: str = Field("", description="prefix of every default layer salt")
    buckets: int = Field(10_000, ge=100, le=1_000_000)
    holdout: Holdout = Field(default_factory=Holdout)
    layers: list[Layer] = Field(default_factory=list, description="optional: order and salts of layers")
    experiments: list[Experiment] = Field(default_factory=list)

    def layer_names(self) -> list[str]:
        """Layers in routing order: declared ones first, then the order experiments mention them."""
        names = [layer.name for layer in self.layers]
        for experiment in self.experiments:
            if experiment.layer not in names:
                names.append(experiment.layer)
        return names

    def layer_salt(self, name: str) -> str:
        for layer in self.layers:
            if layer.name == name and layer.salt is not None:
                return layer.salt
        return f"{self.salt}/{name}"

    def experiments_in(self, layer: str) -> list[Experiment]:
        return [e for e in self.experiments if e.layer == layer]

    def layer_shares(self, layer: str) -> list[float]:
        """Share of the layer per experiment (percent): explicit, else an equal split of the rest."""
        experiments = self.experiments_in(layer)
        explicit = sum(e.layer_share for e in experiments if e.layer_share is not None)
        implicit = [e for e in experiments if e.layer_share is None]
        rest = max(0.0, 100.0 - explicit) / len(implicit) if implicit else 0.0
        return [e.layer_share if e.layer_share is not None else rest for e in experiments]

    def experiment(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise KeyError(f"no experiment named {name!r}")


# --------------------------------------------------------------------------- loading and errors


def _loc_to_path(loc: tuple[Any, ...], raw: Any) -> str:
    """Turn a pydantic location into a readable path, naming list items by their `name` key."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int):
            label = str(key)
            if isinstance(node, list) and 0 <= key < len(node):
                item = node[key]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    label = item["name"]
                node = item
            else:
                node = None
            parts.append(f"[{label}]")
        else:
            node = node.get(key) if isinstance(node, dict) else None
            parts.append(f".{key}" if parts else str(key))
    return "".join(parts) or "<root>"


def _format_validation_error(error: ValidationError, raw: Any) -> list[str]:
    return [f"{_loc_to_path(tuple(e['loc']), raw)}: {e['msg']}" for e in error.errors()]


def _semantic_problems(config: ExperimentsConfig) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    declared_layers = {layer.name for layer in config.layers}
    if len(declared_layers) != len(config.layers):
        problems.append("layers: layer names must be unique")
    for experiment in config.experiments:
        where = f"experiments[{experiment.name}]"
        if experiment.name in seen:
            problems.append(f"{where}.name: duplicate experiment name {experiment.name!r}")
        if experiment.name == HOLDOUT:
            problems.append(f"{where}.name: {HOLDOUT!r} is reserved for the global holdout")
        seen.add(experiment.name)
        if config.layers and experiment.layer not in declared_layers:
            problems.append(f"{where}.layer: unknown layer {experiment.layer!r} (declared: {sorted(declared_layers)})")
        names = [v.name for v in experiment.variants]
        for name in {n for n in names if names.count(n) > 1}:
            problems.append(f"{where}.variants: duplicate variant name {name!r}")
        if experiment.control is not None and experiment.control not in names:
            problems.append(f"{where}.control: {experiment.control!r} is not one of the variants {names}")
        if experiment.start and experiment.stop and experiment.stop <= experiment.start:
            problems.append(f"{where}.stop: must be after start ({experiment.start.isoformat()})")
        if experiment.analysis.method == "group_sequential" and experiment.analysis.max_units_per_variant is None:
            problems.append(
                f"{where}.analysis.max_units_per_variant: required when analysis.method is 'group_sequential'"
            )
        total_weight = sum(v.weight for v in experiment.variants)
        if total_weight > 100 + _EPS:
            problems.append(f"{where}.variants: weights sum to {total_weight:g}%, must be <= 100")
        explicit_lanes = sum(v.lane for v in experiment.variants if v.lane is not None)
        if explicit_lanes > 100 + _EPS:
            problems.append(f"{where}.variants: lanes sum to {explicit_lanes:g}%, must be <= 100")
        for variant, lane in zip(experiment.variants, experiment.lanes(), strict=True):
            if variant.weight > lane + _EPS:
                problems.append(
                    f"{where}.variants[{variant.name}].weight: {variant.weight:g}% exceeds its lane of "
                    f"{lane:g}% (set `lane` explicitly to reserve a larger bucket range)"
                )
    by_layer: dict[str, float] = defaultdict(float)
    for experiment in config.experiments:
        if experiment.layer_share is not None:
            by_layer[experiment.layer] += experiment.layer_share
    for layer, total in by_layer.items():
        if total > 100 + _EPS:
            problems.append(f"layers[{layer}]: experiments' layer_share sum to {total:g}%, must be <= 100")
    return problems


def _salt_problems(config: ExperimentsConfig) -> list[str]:
    """Every hash salt must be unique: two hashes with one salt give the same buckets, so the layers,
    experiments or holdout sharing it are correlated instead of independent."""
    owners: list[tuple[str, str, str]] = [("holdout", "holdout.salt", config.holdout.salt)]
    owners += [(f"layers[{n}]", f"layers[{n}].salt", config.layer_salt(n)) for n in config.layer_names()]
    owners += [(f"experiments[{e.name}]", f"experiments[{e.name}].salt", e.effective_salt) for e in config.experiments]
    first: dict[str, str] = {}
    problems = []
    for owner, where, salt in owners:
        if salt in first:
            problems.append(
                f"{where}: salt {salt!r} is also used by {first[salt]} (a reused salt correlates their "
                "assignments; give each a unique salt)"
            )
        else:
            first[salt] = owner
    return problems


def _layer_field_problems(config: ExperimentsConfig) -> list[str]:
    """Two layers may not set the same field: `resolve` would silently let the first layer win."""
    setters: dict[str, tuple[str, str]] = {}
    problems = []
    for layer in config.layer_names():
        fields: dict[str, str] = {}
        for experiment in config.experiments_in(layer):
            for variant in experiment.variants:
                names = [k for k in ("retrieval_version", "ranking_version") if getattr(variant, k) is not None]
                names += [f"reranking.{k}" for k in variant.reranking.overrides()]
                for name in names:
                    fields.setdefault(name, experiment.name)
        for name, experiment in fields.items():
            if name in setters:
                other_layer, other = setters[name]
                problems.append(
                    f"layers[{layer}]: sets {name} (experiment {experiment}), which layer {other_layer} also sets "
                    f"(experiment {other}); a unit in both would get only the first layer's value"
                )
            else:
                setters[name] = (layer, experiment)
    return problems


def parse_config(raw: Any, source: str = "<config>") -> ExperimentsConfig:
    """Validate an already-parsed YAML/JSON document; raise `ConfigError` naming every bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        config = ExperimentsConfig.model_validate(raw)
    except ValidationError as exc:
        lines = _format_validation_error(exc, raw)
        raise ConfigError(f"{source}: invalid experiment config:\n  " + "\n  ".join(lines)) from None
    problems = _semantic_problems(config) + _salt_problems(config) + _layer_field_problems(config)
    if problems:
        raise ConfigError(f"{source}: invalid experiment config:\n  " + "\n  ".join(problems))
    return config


def load_config(path: str | Path) -> ExperimentsConfig:
    """Read and validate an experiments YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(raw, source=str(path))


def slugify(text: str) -> str:
    """File-name-safe version of an experiment name (for report files)."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text)
