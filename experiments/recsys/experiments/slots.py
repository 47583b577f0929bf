"""Explicit, persisted slot allocation: adding or removing an experiment never moves a running one.

Each experiment owns a contiguous range of its layer's buckets (its *slot*). Laid out from the config
alone (cumulative shares in declaration order, implicit shares an equal split of the rest), a slot
depended on the other experiments: adding an experiment with an implicit share shrank the others,
removing an earlier one shifted every later one, and the units in between changed experiment while
it ran. So the slots are written down once, in a ledger next to the config
(``<config stem>.slots.json``), and from then on only *new* experiments are placed, into free space:

* an experiment already in the ledger keeps its range; an explicit ``layer_share`` change grows it in
  place (only into free buckets right after it) or shrinks it from the top, and never moves it;
* a new experiment gets the first free range of its explicit share, or, with an implicit share, an
  equal split of the layer's free buckets (first fit);
* a removed experiment's range becomes free (a later experiment may reuse those units);
* a new experiment that does not fit is a config error (`validate`, and the router refuses the edit
  and keeps serving the old config), never a reason to squeeze the running ones.

Without a ledger the layout is the historical one (so existing deployments are not reshuffled).
`ExperimentRouter.from_file` writes the ledger when the layout changed (create or update, atomic rename) in
the ledger directory (``ledger_dir``: serving's ``experiments_ledger_dir``, the CLI's ``--ledger-dir`` /
``RECSYS_EXPERIMENTS_LEDGER_DIR``, Helm ``experiments.stateDir``; default: beside the config). When it cannot
write there it refuses (``ConfigError``) instead of keeping an in-memory layout that another replica or the
next restart would not share; `recsys experiments allocate` writes it explicitly;
commit it with the config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from recsys.experiments.config import ExperimentsConfig

Ledger = dict[str, dict[str, tuple[int, int]]]  # layer -> experiment -> [low, high) buckets


def _buckets(percent: float, n: int) -> int:
    return int(round(percent * n / 100.0))


def historical_layout(config: ExperimentsConfig) -> Ledger:
    """Slots from the config alone: cumulative shares in declaration order (the layout before ledgers)."""
    n = config.buckets
    out: Ledger = {}
    for layer in config.layer_names():
        slots: dict[str, tuple[int, int]] = {}
        pct = 0.0
        for experiment, share in zip(config.experiments_in(layer), config.layer_shares(layer), strict=True):
            low = _buckets(pct, n)
            pct += share
            slots[experiment.name] = (low, min(n, _buckets(pct, n)))
        out[layer] = slots
    return out


def _free_ranges(occupied: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    free, cursor = [], 0
    for low, high in sorted(occupied):
        if low > cursor:
            free.append((cursor, low))
        cursor = max(cursor, high)
    if cursor < n:
        free.append((cursor, n))
    return free


def _first_fit(occupied: list[tuple[int, int]], width: int, n: int) -> tuple[int, int] | None:
    for low, high in _free_ranges(occupied, n):
        if high - low >= width:
            return (low, low + width)
    return None


def allocate(config: ExperimentsConfig, previous: Ledger | None) -> tuple[Ledger, list[str]]:
    """The slots of every experiment given the previous ledger, and the problems (an unfillable share).

    The result has an entry for every experiment of the config (``(0, 0)`` when it could not be placed).
    """
    if previous is None:
        return historical_layout(config), []
    n = config.buckets
    out: Ledger = {}
    problems: list[str] = []
    for layer in config.layer_names():
        experiments = config.experiments_in(layer)
        names = {e.name for e in experiments}
        before = {k: v for k, v in previous.get(layer, {}).items() if k in names}  # removed ones free theirs
        occupied = dict(before)
        placed: dict[str, tuple[int, int]] = {}
        for e in experiments:
            if e.name not in before:
                continue
            low, high = before[e.name]
            if e.layer_share is not None and _buckets(e.layer_share, n) != high - low:
                want = low + _buckets(e.layer_share, n)
                others = [r for name, r in occupied.items() if name != e.name]
                if want < high or (want <= n and all(r[1] <= high or r[0] >= want for r in others)):
                    high = want
                else:
                    problems.append(
                        f"experiments[{e.name}].layer_share: cannot grow to {e.layer_share:g}% in place "
                        f"(buckets [{high}, {want}) are not free); it keeps {100 * (high - low) / n:g}%"
                    )
            placed[e.name] = occupied[e.name] = (low, high)
        new = [e for e in experiments if e.name not in before]
        for e in [x for x in new if x.layer_share is not None]:
            width = _buckets(e.layer_share, n)
            slot = _first_fit(list(occupied.values()), width, n)
            if slot is None:
                problems.append(f"experiments[{e.name}].layer_share: no free range of {e.layer_share:g}% in "
                                f"layer {layer!r} (running experiments keep theirs)")
                slot = (0, 0)
            placed[e.name] = occupied[e.name] = slot
        implicit = [x for x in new if x.layer_share is None]
        if implicit:
            free = sum(h - lo for lo, h in _free_ranges(list(occupied.values()), n))
            width = free // len(implicit)
            for e in implicit:
                slot = _first_fit(list(occupied.values()), width, n) if width else None
                if slot is None:
                    problems.append(f"experiments[{e.name}]: no free buckets left in layer {layer!r} "
                                    "(give it an explicit layer_share after freeing space)")
                    slot = (0, 0)
                placed[e.name] = occupied[e.name] = slot
        out[layer] = {e.name: placed[e.name] for e in experiments}
    return out, problems


LEDGER_DIR_ENV = "RECSYS_EXPERIMENTS_LEDGER_DIR"  # the CLI's --ledger-dir; serving: experiments_ledger_dir


def ledger_path(config_path: str | Path, ledger_dir: str | Path | None = None) -> Path:
    """``<ledger_dir>/<config stem>.slots.json``; without ``ledger_dir`` beside the config file."""
    path = Path(config_path)
    return (Path(ledger_dir) if ledger_dir else path.parent) / f"{path.stem}.slots.json"


def read_ledger(path: str | Path, buckets: int) -> Ledger | None:
    """The persisted slots, or None when there is no ledger yet; ValueError when it does not fit."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("buckets") != buckets:
            raise ValueError(f"written for {data.get('buckets')} buckets, the config has {buckets}")
        return {
            layer: {name: (int(r[0]), int(r[1])) for name, r in slots.items()}
            for layer, slots in data["layers"].items()
        }
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{path}: unusable slot ledger ({exc})") from None


def write_ledger(path: str | Path, ledger: Ledger, buckets: int) -> None:
    """Write atomically (rename), so a replica never reads half a ledger."""
    path = Path(path)
    layers = {layer: {name: list(r) for name, r in slots.items()} for layer, slots in ledger.items()}
    body = {"version": 1, "buckets": buckets, "layers": layers}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["Ledger", "allocate", "historical_layout", "ledger_path", "read_ledger", "write_ledger"]
