"""Append-only record logs as daily partitioned parquet at a URI (local dir, ``file://``, ``s3://``, ...).

Why: JSON-lines files in one shared directory grow without bound, need a POSIX (RWX) volume shared by
every replica, tear lines on NFS, and their reader loaded whole files (issue 22). Here a log is a
dataset ``<uri>/<kind>/date=YYYY-MM-DD/part-<first ts>-<uuid>.parquet``:

* **one writer per batch, no shared file**: each flush writes new, immutable files (fsspec, so any
  object store works); a file appears whole or not at all (local: written under a dot-name, then
  renamed; object stores: a PUT is atomic). Written by one consumer group
  (:mod:`recsys.platform.log_archiver`), so no two processes ever append to one file.
* **rotation and retention by partition**: a day is a directory; :func:`prune` drops whole days
  older than ``retention_days``.
* **readers stream**: :func:`iter_batches` yields one parquet row group at a time, oldest day first,
  and can be limited to a day range and to columns; nothing loads a whole dataset unless asked
  (:func:`read_frame`).

Records are dicts with a float ``ts`` (epoch seconds; it picks the day). Nested values (lists of
items, propensities) are kept as JSON text in a column whose name ends in ``_json`` only when the
schema cannot hold them; lists of numbers/strings are stored as parquet lists.
"""

from __future__ import annotations

import posixpath
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

ROW_GROUP_ROWS = 50_000
"""Rows per parquet row group: the unit a reader holds in memory at once."""


def _fs(uri: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(uri))
    return fs, root.rstrip("/") or "/"


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(float(ts)))


def write_records(uri: str, kind: str, records: Sequence[dict[str, Any]]) -> list[str]:
    """Write ``records`` as new parquet files, one per UTC day they fall on; returns the paths written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not records:
        return []
    from fsspec.implementations.local import LocalFileSystem

    fs, root = _fs(uri)
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_day[day_of(rec["ts"])].append(rec)
    written = []
    for day, rows in sorted(by_day.items()):
        folder = posixpath.join(root, kind, f"date={day}")
        fs.makedirs(folder, exist_ok=True)
        name = f"part-{int(min(r['ts'] for r in rows) * 1000):013d}-{uuid.uuid4().hex[:12]}.parquet"
        table = pa.Table.from_pylist(rows)
        final = posixpath.join(folder, name)
        local = isinstance(fs, LocalFileSystem)
        target = posixpath.join(folder, "." + name + ".tmp") if local else final
        with fs.open(target, "wb") as f:
            pq.write_table(table, f, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        if local:
            fs.mv(target, final)  # rename: readers never see a half-written file
        written.append(final)
    return written


def days(uri: str, kind: str) -> list[str]:
    """The days (``YYYY-MM-DD``) that hold files of ``kind``, oldest first."""
    fs, root = _fs(uri)
    folder = posixpath.join(root, kind)
    if not fs.exists(folder):
        return []
    out = []
    for p in fs.ls(folder, detail=False):
        name = posixpath.basename(p.rstrip("/"))
        if name.startswith("date="):
            out.append(name[5:])
    return sorted(out)


def files(uri: str, kind: str, start: str | None = None, end: str | None = None) -> list[str]:
    """Parquet files of ``kind`` with ``start <= day <= end`` (inclusive, ``YYYY-MM-DD``), in time order."""
    fs, root = _fs(uri)
    out = []
    for day in days(uri, kind):
        if (start and day < start) or (end and day > end):
            continue
        folder = posixpath.join(root, kind, f"date={day}")
        out.extend(sorted(p for p in fs.ls(folder, detail=False)
                          if posixpath.basename(p).startswith("part-") and p.endswith(".parquet")))
    return out


def iter_batches(uri: str, kind: str, start: str | None = None, end: str | None = None,
                 columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream the dataset one row group at a time (bounded memory whatever its size)."""
    import pyarrow.parquet as pq

    fs, _ = _fs(uri)
    for path in files(uri, kind, start, end):
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            cols = [c for c in columns if c in pf.schema_arrow.names] if columns else None
            for i in range(pf.num_row_groups):
                yield from pf.read_row_group(i, columns=cols).to_batches()


def iter_records(uri: str, kind: str, start: str | None = None, end: str | None = None) -> Iterator[dict[str, Any]]:
    for batch in iter_batches(uri, kind, start, end):
        yield from batch.to_pylist()


def read_frame(uri: str, kind: str, columns: Sequence[str], start: str | None = None,
               end: str | None = None) -> pd.DataFrame:
    """The whole (day-filtered) dataset as one DataFrame with ``columns`` (missing ones are None)."""
    import pandas as pd

    parts = [b.to_pandas() for b in iter_batches(uri, kind, start, end)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for c in columns:
        if c not in frame.columns:
            frame[c] = None
    return frame[list(columns)]


def prune(uri: str, kind: str, retention_days: int, now: float | None = None) -> list[str]:
    """Delete whole days older than ``retention_days`` (by UTC date); returns the days removed."""
    if retention_days <= 0:
        return []
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    cutoff = (today - timedelta(days=retention_days)).isoformat()
    fs, root = _fs(uri)
    removed = []
    for day in days(uri, kind):
        if day < cutoff:
            fs.rm(posixpath.join(root, kind, f"date={day}"), recursive=True)
            removed.append(day)
    return removed


def is_dataset(uri: str, kinds: Iterable[str]) -> bool:
    """True when ``uri`` holds at least one partition of any of ``kinds`` (vs. a JSON-lines directory)."""
    return any(days(uri, k) for k in kinds)


def parse_day(value: str | date | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()
