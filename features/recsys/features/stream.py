"""The durable event log (a Redis stream) and the consumer that turns it into online features.

Why a stream: an event is acknowledged to the client (HTTP 202) only once it is in the log; the online
update happens after that, in a consumer that retries until it succeeds. So a Redis stall delays the
update but cannot drop it, and the request path is one MULTI/EXEC of XADDs (no read-modify-write).

* :class:`EventStream` appends a batch atomically (MULTI/EXEC): all events of a call are in the log or
  none is, and an error becomes :class:`EventLogUnavailable` (HTTP 503 + Retry-After).
* :class:`StreamConsumer` reads with XREADGROUP in consumer group ``online`` (one consumer name per
  process/replica), applies each batch with the overlay script of :mod:`recsys.features.realtime`
  (which XACKs and applies atomically, so a re-delivered entry is never counted twice), appends the
  applied records to the JSON-lines file log for offline use (when configured), and on failure sleeps
  and retries the same entries. Its own unacknowledged entries are re-read first (after an error or a
  restart under the same name); entries of a consumer that died are taken over with XAUTOCLAIM once
  idle for ``reclaim_idle_ms``. Acknowledged entries older than ``retention_s`` are trimmed (XTRIM MINID).

Durability is Redis's: run it with ``appendonly yes`` (docs/operations.md) so an acknowledged event
survives a Redis restart too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import FeatureStoreUnavailable
from recsys.features.event_log import EventLog
from recsys.features.realtime import APPLY_SCRIPT, KEEP_DAYS, OverlayKeys, event_args
from recsys.platform.data.schema import EVENT_WEIGHTS
from recsys.platform.redis_async import LoopBoundRedis

log = logging.getLogger(__name__)

GROUP = "online"


class EventLogUnavailable(FeatureStoreUnavailable):
    """The event stream could not be written: nothing was accepted, the client should retry."""


class StreamConfig(BaseModel):
    """Consumer knobs (defaults suit one ingress replica on a small box)."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(500, ge=1, le=10_000, description="Entries per XREADGROUP / script call")
    block_ms: int = Field(1000, ge=1, le=60_000, description="XREADGROUP BLOCK while the stream is idle")
    reclaim_idle_ms: int = Field(30_000, ge=100, description="Take over another consumer's entries idle this long")
    retry_initial_s: float = Field(0.05, gt=0, description="First back-off after a failed apply")
    retry_max_s: float = Field(1.0, gt=0, description="Longest back-off (keeps catch-up within ~1 s of recovery)")
    retention_s: float = Field(3600.0, ge=0, description="Keep acknowledged entries this long (replay, debugging)")
    append_timeout_s: float = Field(1.0, gt=0, description="Socket timeout of the request-path XADD")


def default_consumer_name() -> str:
    """hostname-pid: unique per process, and stable for a process's lifetime (its pending entries stay its own)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _redis(cfg: FeatureStoreConfig, timeout_s: float):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(**cfg.redis_kwargs(socket_timeout=timeout_s), retry=Retry(NoBackoff(), 0),
                       health_check_interval=0)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.RedisError, OSError, FeatureStoreUnavailable)


class EventStream:
    """Request-path writer: append validated records to the stream, atomically per call."""

    def __init__(self, cfg: FeatureStoreConfig, stream_cfg: StreamConfig | None = None):
        self.cfg = cfg
        self.stream_cfg = stream_cfg or StreamConfig()
        self.keys = OverlayKeys(cfg.project)
        self.redis = _redis(cfg, self.stream_cfg.append_timeout_s)
        self._aredis = LoopBoundRedis(**cfg.redis_kwargs(socket_timeout=self.stream_cfg.append_timeout_s))
        self._errors = _redis_errors()

    def append(self, records: Sequence[dict]) -> list[str]:
        """XADD every record in one MULTI/EXEC; returns the stream ids. Raises EventLogUnavailable."""
        if not records:
            return []
        try:
            with self.redis.pipeline(transaction=True) as pipe:
                for r in records:
                    pipe.xadd(self.keys.stream, {"e": json.dumps(r, separators=(",", ":"))})
                ids = pipe.execute()
        except self._errors as e:
            raise self._unavailable(e) from e
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def append_async(self, records: Sequence[dict]) -> list[str]:
        """:meth:`append` on the caller's event loop (redis.asyncio): the ``POST /v1/events`` path.

        One record is a plain XADD (atomic by itself); several go in one MULTI/EXEC, as in :meth:`append`.
        """
        if not records:
            return []
        blobs = [json.dumps(r, separators=(",", ":")) for r in records]
        try:
            client = self._aredis.get()
            if len(blobs) == 1:
                ids = [await client.xadd(self.keys.stream, {"e": blobs[0]})]
            else:
                async with client.pipeline(transaction=True) as pipe:
                    for b in blobs:
                        pipe.xadd(self.keys.stream, {"e": b})
                    ids = await pipe.execute()
        except self._errors as e:
            raise self._unavailable(e) from e
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def _unavailable(self, e: BaseException) -> EventLogUnavailable:
        return EventLogUnavailable(f"event log {self.cfg.redis_target} unavailable: {type(e).__name__}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.redis.close()


@dataclass
class ConsumerStats:
    applied: int = 0  # entries whose effects were written (first delivery or re-delivery)
    skipped: int = 0  # entries acknowledged before (a re-delivery after a lost reply)
    failures: int = 0  # failed apply attempts (each one retried)
    reclaimed: int = 0  # entries taken over from another consumer


class StreamConsumer:
    """Applies stream entries to the overlay; ``run`` loops until stopped, ``drain`` until idle."""

    def __init__(self, cfg: FeatureStoreConfig, name: str | None = None, stream_cfg: StreamConfig | None = None,
                 invalidate_prefix: str = "", invalidate_ttl_s: int = 7 * 86400,
                 on_applied: Callable[[list[dict]], None] | None = None, archive: EventLog | None = None):
        self.cfg = cfg
        self.name = name or default_consumer_name()
        self.stream_cfg = stream_cfg or StreamConfig()
        self.keys = OverlayKeys(cfg.project)
        self.invalidate_prefix = invalidate_prefix
        self.invalidate_ttl_s = int(invalidate_ttl_s)
        self.on_applied = on_applied
        self.archive = archive
        # socket timeout above BLOCK, so an idle XREADGROUP is not mistaken for a dead Redis
        self.redis = _redis(cfg, self.stream_cfg.block_ms / 1000 + max(cfg.read_timeout_s, 1.0))
        self._script = self.redis.register_script(APPLY_SCRIPT)
        self._errors = _redis_errors()
        self._genres: dict[int, list[int]] = {}
        self._reader = None
        self._group_ready = False
        self._last_reclaim = 0.0
        self._last_trim = 0.0
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ setup
    def ensure_group(self) -> None:
        import redis

        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def _item_genres(self, items: Sequence[int]) -> dict[int, list[int]]:
        """Genre indices of each item (from Feast's item_profile row; unknown items have none), cached."""
        todo = [i for i in dict.fromkeys(items) if i not in self._genres]
        if todo:
            if self._reader is None:
                from recsys.features.online import OnlineFeatureClient

                self._reader = OnlineFeatureClient(self.cfg, item_features=["item_genre_multihot"])
            cols, _ = self._reader.read_item_columns(todo)
            for i, mh in zip(todo, cols["item_genre_multihot"], strict=True):
                self._genres[i] = [g for g, v in enumerate(mh or []) if v > 0]
            if len(self._genres) > 200_000:
                self._genres.clear()
        return {i: self._genres.get(i, []) for i in items}

    # ------------------------------------------------------------------ one step
    def _apply(self, entries: list[tuple[str, dict]]) -> int:
        """Apply parsed entries (one script call); returns how many were new (not acknowledged before)."""
        if not entries:
            return 0
        genres = self._item_genres([int(r["item_id"]) for _, r in entries])
        today = int(time.time() // 86400)
        args: list[str] = [GROUP, self.keys.prefix, str(self.cfg.recent_items), str(today), str(KEEP_DAYS),
                           self.invalidate_prefix, str(self.invalidate_ttl_s), str(self.cfg.seen_items)]
        for sid, r in entries:
            w = EVENT_WEIGHTS[r["event_type"]] * (float(r["rating"]) / 5.0 if r.get("rating") is not None else 1.0)
            args += event_args(sid, r, genres[int(r["item_id"])], w, today)
        applied = int(self._script(keys=[self.keys.stream], args=args))
        return applied

    def _parse(self, raw: list) -> list[tuple[str, dict]]:
        out = []
        for sid, fields in raw:
            sid = sid.decode() if isinstance(sid, bytes) else str(sid)
            if not fields:  # deleted (trimmed) entry still pending: nothing to apply, ack it
                self.redis.xack(self.keys.stream, GROUP, sid)
                continue
            blob = fields.get(b"e") or fields.get("e")
            try:
                rec = json.loads(blob)
            except (TypeError, ValueError):
                log.error("stream entry %s is not a JSON event; acknowledged and skipped", sid)
                self.redis.xack(self.keys.stream, GROUP, sid)
                continue
            out.append((sid, rec))
        return out

    def _process(self, raw: list) -> int:
        entries = self._parse(raw)
        if not entries:
            return 0
        records = [r for _, r in entries]
        # Archive *before* the apply script acknowledges the entries: if the script runs but its reply is
        # lost (a Redis stall past the socket timeout), the entries are no longer pending and would never
        # reach the archive.  This way the archive is at-least-once; a retried batch may repeat records,
        # which carry their ``event_id`` (``read_log(..., unique_key="event_id")`` drops the repeats).
        if self.archive is not None:
            try:
                self.archive.append(records)
            except OSError as e:  # the offline archive is best effort; the stream stays the record of truth
                log.warning("event archive append failed: %s", e.strerror)
        new = self._apply(entries)
        self.stats.applied += new
        self.stats.skipped += len(entries) - new
        if self.on_applied is not None:
            self.on_applied(records)
        return len(entries)

    def poll_once(self, block_ms: int | None = None) -> int:
        """Own pending entries first, then other consumers' stale ones, then new ones. Raises on Redis errors."""
        self.ensure_group()
        n = self.stream_cfg.batch
        own = self.redis.xreadgroup(GROUP, self.name, {self.keys.stream: "0"}, count=n)
        raw = own[0][1] if own else []
        if raw:
            return self._process(raw)
        now = time.monotonic()
        if now - self._last_reclaim >= self.stream_cfg.reclaim_idle_ms / 1000 / 2:
            self._last_reclaim = now
            res = self.redis.xautoclaim(self.keys.stream, GROUP, self.name, self.stream_cfg.reclaim_idle_ms,
                                        start_id="0-0", count=n)
            claimed = res[1] if res else []
            if claimed:
                self.stats.reclaimed += len(claimed)
                return self._process(claimed)
        if now - self._last_trim >= 30:
            self._last_trim = now
            self.trim()
        block = self.stream_cfg.block_ms if block_ms is None else block_ms
        new = self.redis.xreadgroup(GROUP, self.name, {self.keys.stream: ">"}, count=n, block=block or None)
        raw = new[0][1] if new else []
        return self._process(raw) if raw else 0

    def trim(self) -> None:
        """Drop entries that every consumer has acknowledged and that are older than ``retention_s``."""
        info = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                for g in self.redis.xinfo_groups(self.keys.stream)}
        g = info.get(GROUP)
        if g is None:
            return
        last = g["last-delivered-id"]
        safe = last.decode() if isinstance(last, bytes) else str(last)
        pending = self.redis.xpending(self.keys.stream, GROUP)
        if pending and pending.get("pending"):
            low = pending["min"]
            safe = low.decode() if isinstance(low, bytes) else str(low)
        else:
            ms, seq = (int(x) for x in safe.split("-"))
            safe = f"{ms}-{seq + 1}"
        cutoff = int((time.time() - self.stream_cfg.retention_s) * 1000)
        min_id = min((int(safe.split("-")[0]), int(safe.split("-")[1])), (cutoff, 0))
        if min_id[0] > 0:
            self.redis.xtrim(self.keys.stream, minid=f"{min_id[0]}-{min_id[1]}", approximate=True)

    # ------------------------------------------------------------------ loops
    def run(self) -> None:
        """Loop until :meth:`stop`: every error is logged (once per outage) and retried with back-off."""
        delay = self.stream_cfg.retry_initial_s
        failing = False
        while not self._stop.is_set():
            try:
                self.poll_once()
            except self._errors as e:
                self.stats.failures += 1
                if not failing:
                    log.warning("event consumer %s: Redis %s unavailable (%s); retrying until it is back",
                                self.name, self.cfg.redis_target, type(e).__name__)
                failing = True
                self._group_ready = False if "NOGROUP" in str(e) else self._group_ready
                self._stop.wait(delay)
                delay = min(delay * 2, self.stream_cfg.retry_max_s)
                continue
            except Exception:  # noqa: BLE001 - a bug must not stop the consumer thread; the entry stays pending
                self.stats.failures += 1
                log.exception("event consumer %s: apply failed; retrying", self.name)
                self._stop.wait(self.stream_cfg.retry_max_s)
                continue
            if failing:
                log.warning("event consumer %s: Redis is back, catching up", self.name)
            failing = False
            delay = self.stream_cfg.retry_initial_s

    def start(self) -> StreamConsumer:
        """Run in a daemon thread (one per process); idempotent."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name=f"event-consumer-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with contextlib.suppress(Exception):
            self.redis.close()

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Apply until no entry is pending or new (for the CLI and tests); False on timeout or error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.poll_once(block_ms=0) == 0 and self.backlog() == 0:
                    return True
            except self._errors:
                self.stats.failures += 1
                time.sleep(self.stream_cfg.retry_initial_s)
        try:
            return self.backlog() == 0
        except self._errors:
            return False

    def backlog(self) -> int:
        """Entries not yet applied: pending in the group plus not yet delivered (Redis >= 7 'lag')."""
        g = next((g for g in self.redis.xinfo_groups(self.keys.stream)
                  if (g["name"].decode() if isinstance(g["name"], bytes) else g["name"]) == GROUP), None)
        if g is None:
            return 0
        lag = g.get("lag")
        return int(g.get("pending") or 0) + int(lag or 0)
