"""Durable append-only event log (JSON lines) that survives crashes without corrupting itself.

Each append is one ``os.write`` of complete lines on an ``O_APPEND`` descriptor under an exclusive
``flock`` (several writer processes may share the file), followed by ``fsync``: a record is either
entirely in the file or, if the machine dies mid-write, a torn *last* line.  Before writing, the
appender checks the last byte; if a previous writer died mid-line it starts with a newline so the
torn fragment stays on its own line and every later record still parses.  :func:`read_log` returns
the records plus the line numbers it could not parse, so a torn line is reported, not fatal.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LogReadResult:
    records: list[dict]
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers that did not parse
    torn_tail: bool = False  # the file ends without a newline (a writer died mid-record)


class EventLog:
    """Append-only JSON-lines file; ``append`` returns the byte offset the batch starts at."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync

    def append(self, records: Sequence[dict]) -> int:
        if not records:
            return self.size()
        payload = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size > 0:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        payload = b"\n" + payload  # isolate a torn line left by a crashed writer
                        size += 1
            written = os.write(fd, payload)
            if written != len(payload):  # pragma: no cover - regular files write fully or raise
                raise OSError(f"short write to {self.path}: {written} of {len(payload)} bytes")
            if self.fsync:
                os.fsync(fd)
            return size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> LogReadResult:
        return read_log(self.path)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.read().records)


def read_log(path: str | Path, unique_key: str | None = None) -> LogReadResult:
    """Parse every line; unparseable lines are reported by number (a torn tail is expected after a crash).

    ``unique_key`` keeps only the first record for each value of that field: the stream consumer's
    archive is at-least-once (a batch retried after a lost Redis reply is appended again).
    """
    p = Path(path)
    if not p.exists():
        return LogReadResult(records=[])
    data = p.read_bytes()
    result = LogReadResult(records=[], torn_tail=bool(data) and not data.endswith(b"\n"))
    for no, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            result.records.append(rec)
        except ValueError:
            result.bad_lines.append(no)
    if unique_key is not None:
        seen: set = set()
        kept = []
        for rec in result.records:
            key = rec.get(unique_key)
            if key is None or key not in seen:
                seen.add(key)
                kept.append(rec)
        result.records = kept
    return result
