"""Deterministic assignment of units to experiment variants.

Hashing scheme (see docs/experiments.md for the picture):

* ``bucket(salt, unit) = mmh3.hash(f"{salt}:{unit}", seed=0, unsigned) % buckets`` — murmur3 is
  stable across processes, machines and Python versions (unlike ``hash()``).
* Holdout: ``bucket(holdout.salt, unit) < holdout.percent * buckets / 100`` -> the unit is in the global
  holdout, gets the defaults (promoted models) and no experiment.
* Layer: ``bucket(layer salt, unit)`` picks the experiment whose *slot* contains it; slots are contiguous
  ranges laid out in declaration order with width ``layer_share``. One bucket -> one experiment, so
  experiments in the same layer never share a unit; layers use different salts, so they are independent.
* Variant: inside the slot, ``bucket(experiment salt, unit)`` is compared with the variants' *lanes*:
  lane i is the fixed range ``[start_i, start_i + lane_i)`` and the variant currently takes its first
  ``weight_i`` percent, ``[start_i, start_i + weight_i)``. Raising a weight only extends that range, so a
  ramp-up never moves a unit out of a variant that keeps (or grows) its share.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mmh3

from recsys.experiments.config import HOLDOUT, ConfigError, ExperimentsConfig, Targeting, load_config
from recsys.experiments.slots import Ledger, allocate, ledger_path, read_ledger, write_ledger

log = logging.getLogger(__name__)


def bucket(salt: str, unit_id: str, buckets: int) -> int:
    """The unit's bucket in ``[0, buckets)`` for this salt."""
    return mmh3.hash(f"{salt}:{unit_id}", 0, False) % buckets


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which variant (and so which model versions) a unit gets in one layer.

    ``None`` versions mean "use the promoted model". Instances are shared between calls: treat
    ``reranking`` as read-only.
    """

    experiment: str
    variant: str
    layer: str
    retrieval_version: str | None = None
    ranking_version: str | None = None
    reranking: dict[str, Any] = field(default_factory=dict)
    is_holdout: bool = False

    def __hash__(self) -> int:
        return hash((self.experiment, self.variant, self.layer, self.is_holdout))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reranking"] = dict(self.reranking)
        return data


HOLDOUT_ASSIGNMENT = Assignment(experiment=HOLDOUT, variant=HOLDOUT, layer=HOLDOUT, is_holdout=True)


@dataclass(frozen=True, slots=True)
class _Lane:
    low: int
    high: int  # exclusive; == low when the variant has weight 0
    assignment: Assignment


@dataclass(frozen=True, slots=True)
class _Slot:
    low: int
    high: int
    name: str
    salt: str
    start_ts: float | None
    stop_ts: float | None
    targeting: Targeting | None  # None = everyone
    lanes: tuple[_Lane, ...]


@dataclass(frozen=True, slots=True)
class _Layer:
    name: str
    salt: str
    slots: tuple[_Slot, ...]


@dataclass(frozen=True, slots=True)
class _Tables:
    """Everything `assign` needs, precomputed as integers so the hot path is a few comparisons."""

    buckets: int
    holdout_salt: str
    holdout_limit: int
    layers: tuple[_Layer, ...]
    uses_time: bool


def _percent_to_buckets(percent: float, buckets: int) -> int:
    return int(round(percent * buckets / 100.0))


def _compile(config: ExperimentsConfig, slots_ledger: Ledger | None = None) -> _Tables:
    """Integer tables for `assign`; slots from the ledger (`recsys.experiments.slots`), else the config."""
    n = config.buckets
    layers = []
    uses_time = False
    layout, _ = allocate(config, slots_ledger)
    for layer_name in config.layer_names():
        slots = []
        experiments = config.experiments_in(layer_name)
        for experiment in experiments:
            slot_low, slot_high = layout[layer_name][experiment.name]
            lanes = []
            lane_pct = 0.0
            for variant, lane in zip(experiment.variants, experiment.lanes(), strict=True):
                lane_low = _percent_to_buckets(lane_pct, n)
                lane_high = _percent_to_buckets(lane_pct + lane, n)
                active_high = min(lane_high, _percent_to_buckets(lane_pct + variant.weight, n))
                assignment = Assignment(
                    experiment=experiment.name,
                    variant=variant.name,
                    layer=layer_name,
                    retrieval_version=variant.retrieval_version,
                    ranking_version=variant.ranking_version,
                    reranking=variant.reranking.overrides(),
                )
                lanes.append(_Lane(lane_low, min(n, active_high), assignment))
                lane_pct += lane
            start = experiment.start.timestamp() if experiment.start else None
            stop = experiment.stop.timestamp() if experiment.stop else None
            uses_time = uses_time or start is not None or stop is not None
            slots.append(
                _Slot(
                    low=slot_low,
                    high=slot_high,
                    name=experiment.name,
                    salt=experiment.effective_salt,
                    start_ts=start,
                    stop_ts=stop,
                    targeting=None if experiment.targeting.is_everyone else experiment.targeting,
                    lanes=tuple(lanes),
                )
            )
        layers.append(_Layer(layer_name, config.layer_salt(layer_name), tuple(slots)))
    return _Tables(
        buckets=n,
        holdout_salt=config.holdout.salt,
        holdout_limit=_percent_to_buckets(config.holdout.percent, n),
        layers=tuple(layers),
        uses_time=uses_time,
    )


def _persisted_slots(path: str | Path, config: ExperimentsConfig, ledger_dir: str | Path | None = None) -> Ledger:
    """Read the slot ledger (in ``ledger_dir``, else beside ``path``), place new experiments, write it back.

    A ledger that must change but cannot be written is a `ConfigError`: a layout kept only in this
    process's memory (the old fallback) is not the one other replicas or the next restart compute.
    """
    where = ledger_path(path, ledger_dir)
    try:
        previous = read_ledger(where, config.buckets)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    layout, problems = allocate(config, previous)
    if problems:
        raise ConfigError(f"{path}: slot allocation:\n  " + "\n  ".join(problems))
    if layout != previous:
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            write_ledger(where, layout, config.buckets)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the slot ledger {where} ({exc.strerror or exc}): set the ledger directory to a "
                "writable folder (serving: experiments_ledger_dir; CLI: --ledger-dir or RECSYS_EXPERIMENTS_LEDGER_DIR; "
                "Helm: experiments.stateDir), or run `recsys experiments allocate` and ship the ledger with the config"
            ) from None
    return layout


def _targets(targeting: Targeting, attributes: dict[str, Any] | None) -> bool:
    attributes = attributes or {}
    if targeting.segment != "all" and attributes.get(targeting.segment_attribute) != targeting.segment:
        return False
    for key, allowed in targeting.attributes.items():
        if key not in attributes or attributes[key] not in allowed:
            return False
    return True


def _to_timestamp(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
    return float(now)


class ExperimentRouter:
    """Maps a unit (user id) to its variants. Cheap per call, picklable, optionally file-backed.

    Serving calls `assign` (or `assign_primary`) per request; a deployment holding a router built by
    `from_file` calls `maybe_reload()` now and then to pick up config edits without a restart.
    """

    def __init__(
        self, config: ExperimentsConfig, *, path: str | Path | None = None, slots: Ledger | None = None,
        ledger_dir: str | Path | None = None,
    ) -> None:
        self.config = config
        self.slots = slots
        self.ledger_dir = Path(ledger_dir) if ledger_dir else None
        self._tables = _compile(config, slots)
        self._path = Path(path) if path is not None else None
        self._mtime_ns = self._stat_mtime() if self._path else None
        self._last_check = 0.0

    # ------------------------------------------------------------------ construction / reload
    @classmethod
    def from_file(cls, path: str | Path, ledger_dir: str | Path | None = None) -> ExperimentRouter:
        """Build from a YAML file and remember it for `maybe_reload`. Raises `ConfigError` if invalid.

        Slots come from the ledger ``<stem>.slots.json`` in ``ledger_dir`` (default: next to the file), which
        is written (created, or extended with new experiments) when the layout changed; a ledger directory
        that cannot be written is a `ConfigError`: see `recsys.experiments.slots`.
        """
        config = load_config(path)
        return cls(config, path=path, slots=_persisted_slots(path, config, ledger_dir), ledger_dir=ledger_dir)

    def _stat_mtime(self) -> int | None:
        try:
            return os.stat(self._path).st_mtime_ns  # type: ignore[arg-type]
        except OSError:
            return None

    def maybe_reload(self, min_interval_s: float = 0.0) -> bool:
        """Reload the YAML file if its mtime changed; return True if a new config was installed.

        An invalid new file is ignored (the old config keeps serving) and False is returned, so a bad
        edit never takes routing down; run `recsys experiments validate` before saving.
        ``min_interval_s`` rate-limits the stat() call for very hot paths.
        """
        if self._path is None:
            return False
        now = time.monotonic()
        if min_interval_s and now - self._last_check < min_interval_s:
            return False
        self._last_check = now
        mtime = self._stat_mtime()
        if mtime is None or mtime == self._mtime_ns:
            return False
        try:
            config = load_config(self._path)
            slots = _persisted_slots(self._path, config, self.ledger_dir)
        except ValueError as exc:
            log.warning("experiments config %s not reloaded: %s", self._path, exc)
            return False
        self.config, self.slots, self._tables, self._mtime_ns = config, slots, _compile(config, slots), mtime
        return True

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "path": self._path, "mtime_ns": self._mtime_ns, "slots": self.slots,
                "ledger_dir": self.ledger_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self.slots = state.get("slots")
        self.ledger_dir = state.get("ledger_dir")
        self._tables = _compile(self.config, self.slots)
        self._path = state["path"]
        self._mtime_ns = state["mtime_ns"]
        self._last_check = 0.0

    # ------------------------------------------------------------------ hot path
    def is_holdout(self, unit_id: str) -> bool:
        tables = self._tables
        return tables.holdout_limit > 0 and bucket(tables.holdout_salt, unit_id, tables.buckets) < (
            tables.holdout_limit
        )

    def assign(
        self,
        unit_id: str,
        attributes: dict[str, Any] | None = None,
        now: datetime | float | None = None,
    ) -> list[Assignment]:
        """One `Assignment` per layer the unit enters (layers in config order); ``[holdout]`` for holdout.

        ``attributes`` feed targeting (e.g. ``{"segment": "new"}``); ``now`` (datetime or epoch seconds,
        default: current time) is compared with each experiment's start/stop.
        """
        tables = self._tables
        n = tables.buckets
        if tables.holdout_limit and mmh3.hash(f"{tables.holdout_salt}:{unit_id}", 0, False) % n < (
            tables.holdout_limit
        ):
            return [HOLDOUT_ASSIGNMENT]
        ts = _to_timestamp(now) if tables.uses_time else 0.0
        out: list[Assignment] = []
        for layer in tables.layers:
            b = mmh3.hash(f"{layer.salt}:{unit_id}", 0, False) % n
            for slot in layer.slots:
                if slot.low <= b < slot.high:
                    break
            else:
                continue
            if (slot.start_ts is not None and ts < slot.start_ts) or (slot.stop_ts is not None and ts >= slot.stop_ts):
                continue
            if slot.targeting is not None and not _targets(slot.targeting, attributes):
                continue
            v = mmh3.hash(f"{slot.salt}:{unit_id}", 0, False) % n
            for lane in slot.lanes:
                if lane.low <= v < lane.high:
                    out.append(lane.assignment)
                    break
        return out

    def assign_primary(
        self,
        unit_id: str,
        attributes: dict[str, Any] | None = None,
        now: datetime | float | None = None,
    ) -> Assignment | None:
        """The first assignment in layer order (or the holdout marker); None if the unit is in none."""
        assignments = self.assign(unit_id, attributes, now)
        return assignments[0] if assignments else None

    def resolve(self, assignments: list[Assignment]) -> dict[str, Any]:
        """Merge several layers' settings into what one request should use.

        Per field, the first layer (config order) that sets it wins; re-ranking dicts are merged the
        same way. Unset versions stay None, meaning "promoted".
        """
        retrieval = ranking = None
        reranking: dict[str, Any] = {}
        for a in assignments:
            retrieval = retrieval if retrieval is not None else a.retrieval_version
            ranking = ranking if ranking is not None else a.ranking_version
            for key, value in a.reranking.items():
                reranking.setdefault(key, value)
        return {"retrieval_version": retrieval, "ranking_version": ranking, "reranking": reranking}

    def expected_shares(self, experiment: str) -> dict[str, float]:
        """Configured traffic per variant as a fraction of the experiment's units (for the SRM check)."""
        exp = self.config.experiment(experiment)
        total = sum(v.weight for v in exp.variants)
        return {v.name: (v.weight / total if total else 0.0) for v in exp.variants}
