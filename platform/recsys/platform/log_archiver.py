"""One durable path for exposure/outcome/event records: a Redis stream, archived by one consumer group.

Writers (every serving replica) ``XADD`` a record to the stream ``recsys:logs`` (:class:`LogStream`) —
no file, no shared volume, no torn lines. One consumer group (``log-archiver``) reads it and writes
daily partitioned parquet at a URI (:mod:`recsys.platform.log_dataset`); each entry goes to exactly one
consumer of the group, so any number of archiver processes (one per replica, or one job) share the
work without two of them writing one file. Entries are acknowledged (and deleted) only after their
parquet file is written: a crash in between re-archives the batch (at-least-once; outcome readers
de-duplicate by ``event_id``). ``retention_days`` prunes whole days after each write.

The stream has a ``MAXLEN ~`` safety cap (``max_stream_len``): it only bites when no archiver runs for
that many records, and ``publish`` then reports it in the log line count (``trimmed`` metric) rather
than blocking serving.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recsys.platform import log_dataset

log = logging.getLogger(__name__)


class LogArchiveConfig(BaseModel):
    """Where records go (serving's ``log_archive``; ``recsys experiments archive`` takes the same)."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(..., description="Dataset root: a local dir, file://..., s3://bucket/prefix (fsspec)")
    stream: str = Field("recsys:logs", description="Redis stream every writer appends to")
    group: str = Field("log-archiver", description="The one consumer group that writes the dataset")
    retention_days: int = Field(0, ge=0, description="Drop days older than this (0 = keep everything)")
    batch: int = Field(5_000, ge=1, le=100_000, description="Records per read (and at most per file and day)")
    max_stream_len: int = Field(5_000_000, ge=1_000, description="XADD MAXLEN ~ safety cap of the stream")
    run_archiver: bool = Field(True, description="Serving: run an archiver thread in each ingress replica")
    linger_s: float = Field(1.0, ge=0, le=300, description="After a read that got less than a batch, wait this "
                            "long and read the rest once more before writing: fewer, larger files (one file per "
                            "record at low traffic otherwise), at the cost of that much archive latency")


class LogStream:
    """The writer side: ``publish(kind, record)`` appends one record (a dict with ``ts``)."""

    def __init__(self, redis_url: str, cfg: LogArchiveConfig, timeout_s: float = 0.5):
        import redis

        self.cfg = cfg
        self._r = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def close(self) -> None:
        self._r.close()

    def publish(self, kind: str, record: dict[str, Any]) -> None:
        self._r.xadd(self.cfg.stream, {"kind": kind, "rec": json.dumps(record, separators=(",", ":"))},
                     maxlen=self.cfg.max_stream_len, approximate=True)


class LogArchiver:
    """The reader side: one consumer of the group; :meth:`run_once` archives one batch."""

    def __init__(self, redis_url: str, cfg: LogArchiveConfig, consumer: str | None = None):
        import redis

        self.cfg = cfg
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._r = redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=5)
        self.clock = time.time  # "now" of retention (a compressed-time soak runs it faster: benchmarks/months.py)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.archived = 0
        self.bad = 0
        self._group_ready = False

    def _ensure_group(self) -> None:
        """Create the group on first use (not in the constructor: a replica starts while Redis is down)."""
        import redis

        if self._group_ready:
            return
        try:
            self._r.xgroup_create(self.cfg.stream, self.cfg.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def run_once(self, block_ms: int = 1000, linger: bool = True) -> int:
        """Archive this consumer's pending entries, else up to ``batch`` new ones (waiting ``linger_s`` for more
        when ``linger``); returns records written."""
        self._ensure_group()
        got = self._r.xreadgroup(self.cfg.group, self.consumer, {self.cfg.stream: "0"}, count=self.cfg.batch)
        entries = got[0][1] if got else []
        if not entries:
            got = self._r.xreadgroup(self.cfg.group, self.consumer, {self.cfg.stream: ">"}, count=self.cfg.batch,
                                     block=block_ms)
            entries = got[0][1] if got else []
            if linger and entries and len(entries) < self.cfg.batch and self.cfg.linger_s > 0 \
                    and not self._stop.is_set():
                self._stop.wait(self.cfg.linger_s)
                got = self._r.xreadgroup(self.cfg.group, self.consumer, {self.cfg.stream: ">"},
                                         count=self.cfg.batch - len(entries))
                entries += got[0][1] if got else []
        if not entries:
            return 0
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for _, fields in entries:
            try:
                kind = fields[b"kind"].decode()
                rec = json.loads(fields[b"rec"])
                if not isinstance(rec, dict) or not isinstance(rec.get("ts"), int | float):
                    raise ValueError("record without a numeric ts")
                by_kind[kind].append(rec)
            except (KeyError, ValueError, UnicodeDecodeError) as e:  # never blocks the stream: counted, dropped
                self.bad += 1
                log.warning("log archiver: dropping a malformed entry: %s", e)
        for kind, records in by_kind.items():
            self._write(kind, records)
            if self.cfg.retention_days:
                log_dataset.prune(self.cfg.uri, kind, self.cfg.retention_days, now=self.clock())
        ids = [eid for eid, _ in entries]
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self.cfg.stream, self.cfg.group, *ids)
        pipe.xdel(self.cfg.stream, *ids)  # archived: the stream holds only what is not yet on disk
        pipe.execute()
        n = sum(len(v) for v in by_kind.values())
        self.archived += n
        return n

    def _write(self, kind: str, records: list[dict[str, Any]]) -> None:
        """Write a batch; a record parquet cannot type (mixed types in a column) is dropped and counted, so
        one odd record never blocks the batch (an I/O error propagates: the batch stays pending, retried)."""
        import pyarrow as pa

        try:
            log_dataset.write_records(self.cfg.uri, kind, records)
            return
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            log.warning("log archiver: batch of %d %s records not typeable (%s); writing one by one",
                        len(records), kind, e)
        for rec in records:
            try:
                log_dataset.write_records(self.cfg.uri, kind, [rec])
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                self.bad += 1

    def drain(self, timeout_s: float = 30.0) -> int:
        """Archive until the stream has nothing new for this group (tests, shutdown)."""
        total, deadline = 0, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = self.run_once(block_ms=100, linger=False)
            total += n
            if n == 0:
                break
        return total

    def start(self) -> None:
        """Archive in a daemon thread until :meth:`stop` (serving replicas)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once(block_ms=1000)
                except Exception as e:  # noqa: BLE001 - Redis or the object store down: retry, never die
                    log.warning("log archiver: %s; retrying", e)
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name="log-archiver", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (it ends within one blocking read) and close the Redis client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._r.close()


class DatasetArchive:
    """The stream consumer's event archive (``append(records)``) as the parquet dataset's ``events`` kind.

    A drop-in for the JSON-lines ``EventLog`` in ``recsys.features.stream.StreamConsumer``: it is called
    by that consumer group only, before the entries are acknowledged. A record parquet cannot type is
    dropped and counted instead of failing the batch (which would retry forever); I/O errors
    propagate as ``OSError`` as before.
    """

    def __init__(self, uri: str, kind: str = "events", retention_days: int = 0):
        self.uri, self.kind, self.retention_days = uri, kind, retention_days
        self.bad = 0
        self.clock = time.time  # "now" of retention (see LogArchiver.clock)

    def append(self, records: list[dict[str, Any]]) -> int:
        import pyarrow as pa

        rows = [r for r in records if isinstance(r.get("ts"), int | float)]
        self.bad += len(records) - len(rows)
        try:
            log_dataset.write_records(self.uri, self.kind, rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            for r in rows:
                try:
                    log_dataset.write_records(self.uri, self.kind, [r])
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                    self.bad += 1
        if self.retention_days:
            log_dataset.prune(self.uri, self.kind, self.retention_days, now=self.clock())
        return len(rows)
