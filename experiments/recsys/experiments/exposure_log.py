"""Append-only exposure and outcome log (JSON lines in a local directory) and its reader.

Layout: ``<dir>/exposures-YYYY-MM-DD.jsonl`` and ``<dir>/outcomes-YYYY-MM-DD.jsonl`` (UTC date of
the record's ``ts``), so old days can be archived or deleted as whole files.

Concurrency: each file is opened with ``O_WRONLY | O_APPEND | O_CREAT`` and every record is encoded to
one ``bytes`` line and handed to a single ``os.write``. With O_APPEND the kernel moves to the end of file
and writes atomically with respect to other appenders on a local filesystem, so several processes (Ray
replicas, the events API) can share one directory without locks and without interleaved lines.
Nothing is buffered in user space: once `log_*` returns, the line is in the page cache and survives a
crash of the process. Durability against an OS crash/power loss is the ``fsync`` policy:
``"always"`` (fsync after every line; slow), ``"interval"`` (default: fsync when more than
``fsync_interval_s`` passed since the last one, and on close) or ``"never"``. Not for NFS.

The reader skips lines it cannot parse (a torn last line after a power loss) and counts them.

Idempotent outcomes: an outcome logged with an ``event_id`` counts once however often it is logged —
a client that retries after a timeout or a 503 sends the same event again, possibly to another
replica. The writer skips ids it wrote recently (a bounded in-process set, which also keeps the files
small), and the reader keeps only the first record of each id, which holds across replicas and
restarts. Outcomes without an id cannot be de-duplicated and are all counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recsys.experiments.config import EVENT_TYPES

if TYPE_CHECKING:  # pandas is only needed to read; writers (serving replicas) skip its import cost
    import pandas as pd

FsyncPolicy = Literal["always", "interval", "never"]
EXPOSURE_COLUMNS = [
    "unit_id", "experiment", "variant", "layer", "request_id", "ts", "items", "is_holdout",
    "assigned_variant", "fallback_reason", "propensities", "degraded", "exposure_id", "cached_from",
]
OUTCOME_COLUMNS = ["unit_id", "event_type", "value", "ts", "item_id", "event_id", "received_ts"]
MAX_CLOCK_SKEW_S = 300.0  # an outcome may not be later than the time it was received plus this
RECENT_EVENT_IDS = 100_000  # per writer; the reader de-duplicates the rest


def _epoch(ts: datetime | float | int | None) -> float:
    if ts is None:
        return time.time()
    if isinstance(ts, datetime):
        return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()  # naive = UTC, like the config
    return float(ts)


class ExposureLog:
    """Writer for exposures (what a unit was shown, under which variant) and outcomes (what it did).

    Picklable: file descriptors are dropped on pickling and reopened lazily by the new owner.
    """

    def __init__(
        self,
        directory: str | Path | None,
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
        sink: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """``sink(kind, record)``: send records there instead of local files, e.g.
        ``recsys.platform.log_archiver.LogStream.publish`` (the Redis stream archived to parquet)."""
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be 'always', 'interval' or 'never', got {fsync!r}")
        self.sink = sink
        if sink is None and directory is None:
            raise ValueError("ExposureLog needs a directory or a sink")
        directory = directory if directory is not None else "."
        self.directory = Path(directory)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self._fds: dict[str, int] = {}
        self._last_fsync = time.monotonic()
        self._pid = os.getpid()
        self._recent_events: OrderedDict[str, None] = OrderedDict()
        if sink is None:
            self.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing
    def log_exposure(
        self,
        unit_id: str,
        experiment: str,
        variant: str,
        request_id: str,
        ts: datetime | float | None = None,
        items: Sequence[Any] = (),
        *,
        layer: str | None = None,
        is_holdout: bool = False,
        assigned_variant: str | None = None,
        fallback_reason: str | None = None,
        propensities: Sequence[float] | None = None,
        degraded: Sequence[str] | None = None,
        exposure_id: str | None = None,
        cached_from: str | None = None,
    ) -> None:
        """Record that ``unit_id`` was served ``items`` under ``experiment``/``variant``.

        Serving logs ``variant="fallback"`` with the ``assigned_variant`` and a ``fallback_reason`` when
        the assigned variant's setting did not reach the answer (a missing version, a failing stage).
        ``propensities`` (optional, one per item): the probability the serving policy had of showing
        that item in this response; off-policy evaluation (``ope.py``) needs it. Stored unrounded: a
        small probability rounded to 0 would make IPS divide by zero.
        ``degraded`` (optional): the response's degraded reasons (shard outage, no candidates, ...),
        logged for *every* arm so that the fallback/degraded rate per arm is a fair guardrail metric.
        ``exposure_id`` (optional): the server's id of the served response (shared by its per-layer
        records); ``request_id`` is then the client's id, which a client may reuse.
        ``cached_from`` (optional): the ``exposure_id`` of the decision whose cached answer this response
        replays; ``propensities`` are then that decision's (off-policy evaluation skips replays).
        """
        if propensities is not None and len(propensities) != len(items):
            raise ValueError(f"propensities has {len(propensities)} values for {len(items)} items")
        record = {
            "unit_id": str(unit_id),
            "experiment": experiment,
            "variant": variant,
            "layer": layer,
            "request_id": str(request_id),
            "ts": _epoch(ts),
            "items": [i if isinstance(i, int | float) else str(i) for i in items],
            "is_holdout": bool(is_holdout),
        }
        if fallback_reason is not None:
            record["assigned_variant"] = assigned_variant
            record["fallback_reason"] = fallback_reason
        if propensities is not None:
            record["propensities"] = [float(p) for p in propensities]
        if degraded:
            record["degraded"] = [str(reason) for reason in degraded]
        if exposure_id is not None:
            record["exposure_id"] = str(exposure_id)
        if cached_from is not None:
            record["cached_from"] = str(cached_from)
        self._append("exposures", record)

    def log_assignment(
        self,
        unit_id: str,
        assignment: Any,
        request_id: str,
        items: Sequence[Any] = (),
        ts: datetime | float | None = None,
        propensities: Sequence[float] | None = None,
    ) -> None:
        """Convenience for serving: log an exposure straight from a router `Assignment`."""
        self.log_exposure(
            unit_id,
            assignment.experiment,
            assignment.variant,
            request_id,
            ts,
            items,
            layer=assignment.layer,
            is_holdout=assignment.is_holdout,
            propensities=propensities,
        )

    def log_outcome(
        self,
        unit_id: str,
        event_type: str,
        value: float = 1.0,
        ts: datetime | float | None = None,
        item_id: str | int | None = None,
        *,
        event_id: str | None = None,
        received_ts: datetime | float | None = None,
    ) -> bool:
        """Record a click/purchase/rating/view; ``value`` is the amount, the rating, or 1.

        ``ts`` is when the event happened (the client's time, validated by ingestion); ``received_ts``
        when it reached the server. With ``received_ts``, ``ts`` is clamped to at most ``received_ts +
        MAX_CLOCK_SKEW_S`` (a client clock ahead of ours) and both are recorded, so a queued or backfilled
        event keeps its own time and does not count as after an exposure it preceded.

        ``event_id`` (the client's id of the event) makes the call idempotent: a retried event is
        counted once (see the module docstring). Returns False when this writer had already logged
        that id and skipped the write, True when a line was written.
        """
        if event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {EVENT_TYPES}, got {event_type!r}")
        value = float(value)
        if value != value:  # NaN would poison every mean downstream
            raise ValueError("value must be a number, got NaN")
        if event_id is not None:
            event_id = str(event_id)
            if not event_id:
                raise ValueError("event_id must be a non-empty string or None")
            if event_id in self._recent_events:
                self._recent_events.move_to_end(event_id)
                return False
        record = {
            "unit_id": str(unit_id),
            "event_type": event_type,
            "value": value,
            "ts": _epoch(ts),
            "item_id": None if item_id is None else str(item_id),
            "event_id": event_id,
        }
        if received_ts is not None:
            record["received_ts"] = _epoch(received_ts)
            record["ts"] = min(record["ts"], record["received_ts"] + MAX_CLOCK_SKEW_S)
        self._append("outcomes", record)
        if event_id is not None:
            self._recent_events[event_id] = None
            if len(self._recent_events) > RECENT_EVENT_IDS:
                self._recent_events.popitem(last=False)
        return True

    def _append(self, kind: str, record: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(kind, record)
            return
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        day = time.strftime("%Y-%m-%d", time.gmtime(record["ts"]))
        fd = self._fd(f"{kind}-{day}.jsonl")
        written = os.write(fd, line)
        if written != len(line):  # only on ENOSPC-like conditions; a torn line is skipped by the reader
            raise OSError(f"short write to {self.directory}: {written} of {len(line)} bytes")
        if self.fsync == "always":
            os.fsync(fd)
        elif self.fsync == "interval":
            now = time.monotonic()
            if now - self._last_fsync >= self.fsync_interval_s:
                for other in self._fds.values():
                    os.fsync(other)
                self._last_fsync = now

    def _fd(self, name: str) -> int:
        if self._pid != os.getpid():  # forked: descriptors are shared with the parent, open our own
            self._fds = {}
            self._pid = os.getpid()
        fd = self._fds.get(name)
        if fd is None:
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fds[name] = fd
        return fd

    def flush(self) -> None:
        """fsync every open file (the data is already in the kernel; this makes it durable)."""
        for fd in self._fds.values():
            os.fsync(fd)
        self._last_fsync = time.monotonic()

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                try:
                    if self.fsync != "never":
                        os.fsync(fd)
                finally:
                    os.close(fd)
        self._fds = {}

    def __enter__(self) -> ExposureLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "fsync": self.fsync,
            "fsync_interval_s": self.fsync_interval_s,
            "sink": self.sink,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"], fsync=state["fsync"], fsync_interval_s=state["fsync_interval_s"],
                      sink=state.get("sink"))


# ---------------------------------------------------------------------- reading


@dataclass
class LogFrames:
    """Exposures and outcomes as DataFrames (``ts`` in epoch seconds), plus how many lines were bad."""

    exposures: pd.DataFrame
    outcomes: pd.DataFrame
    bad_lines: int = 0
    duplicate_outcomes: int = 0  # records dropped because their event_id was already seen


def _read_lines(paths: Iterable[Path], required: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    bad = 0
    for path in paths:
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    bad += 1
                    continue
                if not isinstance(record, dict) or any(key not in record for key in required):
                    bad += 1
                    continue
                records.append(record)
    return records, bad


def read_log(directory: str | Path, start: str | None = None, end: str | None = None) -> LogFrames:
    """Load the exposures and outcomes of a log: a JSON-lines directory, or the archived parquet dataset
    (``recsys.platform.log_dataset``: a local dir, ``file://`` or ``s3://`` URI), optionally only the
    UTC days ``start``..``end`` (``YYYY-MM-DD``, inclusive; the parquet reader then opens no other day)."""
    import pandas as pd

    from recsys.platform import log_dataset

    uri = str(directory)
    if "://" in uri or log_dataset.is_dataset(uri, ("exposures", "outcomes")):
        ex = log_dataset.read_frame(uri, "exposures", EXPOSURE_COLUMNS, start, end)
        oc = log_dataset.read_frame(uri, "outcomes", OUTCOME_COLUMNS, start, end)
        return _frames(ex, oc, 0)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"log directory {directory} does not exist")
    exposures, bad_e = _read_lines(
        (p for p in sorted(directory.glob("exposures-*.jsonl")) if _in_range(p, start, end)),
        ["unit_id", "experiment", "variant", "ts"])
    outcomes, bad_o = _read_lines((p for p in sorted(directory.glob("outcomes-*.jsonl")) if _in_range(p, start, end)),
                                  ["unit_id", "event_type", "ts"])
    ex = pd.DataFrame.from_records(exposures, columns=EXPOSURE_COLUMNS)
    oc = pd.DataFrame.from_records(outcomes, columns=OUTCOME_COLUMNS)
    return _frames(ex, oc, bad_e + bad_o)


def _in_range(path: Path, start: str | None, end: str | None) -> bool:
    day = path.stem.split("-", 1)[1]
    return not ((start and day < start) or (end and day > end))


def _frames(ex: pd.DataFrame, oc: pd.DataFrame, bad: int) -> LogFrames:
    import pandas as pd

    for col in ("items", "propensities"):  # parquet lists arrive as arrays: the JSON reader's lists
        ex[col] = ex[col].map(lambda v: list(v) if v is not None and not isinstance(v, list | str | float) else v)
    ex["ts"] = ex["ts"].astype(float)
    oc["ts"] = oc["ts"].astype(float)
    oc["value"] = pd.to_numeric(oc["value"], errors="coerce").fillna(1.0)
    ex["unit_id"] = ex["unit_id"].astype(str)
    oc["unit_id"] = oc["unit_id"].astype(str)
    # a retried event (same event_id) counts once: keep the earliest record, whichever replica wrote it
    has_id = oc["event_id"].notna()
    duplicate = has_id & oc.sort_values("ts", kind="stable").duplicated(subset=["event_id"]).reindex(oc.index)
    duplicates = int(duplicate.sum())
    if duplicates:
        oc = oc[~duplicate].reset_index(drop=True)
    return LogFrames(ex, oc, bad, duplicates)
