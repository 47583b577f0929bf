"""The consumer that turns the event stream into online features, and that no entry can stop.

:class:`StreamConsumer` reads with XREADGROUP in consumer group ``online`` (one consumer name per
process/replica) and, per batch:

1. checks every entry (:func:`~recsys.features.stream_entries.parse_entry`); one that can never be applied
   (not JSON, not an object, an unknown ``event_type``, ids out of range) is moved to the dead-letter
   stream at once, with its error (:mod:`recsys.features.dead_letters`);
2. appends the records to the JSON-lines archive (when configured), before they are acknowledged;
3. applies the batch: on one Redis node with one script that XACKs and applies atomically (a re-delivered
   entry is never counted twice); on a Redis Cluster with one script per user and per item (their keys
   live on different nodes) and the XACK last. When the batch fails for a reason that is not Redis being
   unavailable, the entries are applied one by one: the ones that work are applied, and one that still
   fails stays pending until it has been delivered ``max_deliveries`` times (XPENDING delivery count),
   then it is dead-lettered with its error. The batch goes on;
4. result-cache invalidation: with the cache on the same Redis node, the apply script bumps the user's
   cache generation in the same step as the XACK. Otherwise the XACK step queues the user in a Redis
   set (the invalidation queue) and the consumer calls ``on_applied`` for the queued users, removing
   them only once it returned: a failed invalidation is retried on every poll, so an acknowledged event
   always ends in an invalidated cache (:mod:`recsys.features.invalidation_queue`).

Its own pending entries are re-read first (after an error or a restart under the same name); entries of
a consumer that died are taken over with XAUTOCLAIM once idle for ``reclaim_idle_ms``; consumer names idle
for ``dead_consumer_idle_ms`` with nothing pending are deleted (XGROUP DELCONSUMER). Applied entries older
than ``retention_s`` are trimmed; the trim stops at the first unapplied entry, which no longer pins it for
long since a failing entry leaves the pending list after ``max_deliveries`` attempts
(:mod:`recsys.features.stream_upkeep`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from recsys.features import stream_upkeep as upkeep
from recsys.features.config import FeatureStoreConfig
from recsys.features.event_log import EventLog
from recsys.features.invalidation_queue import InvalidationQueue
from recsys.features.keys import OverlayKeys
from recsys.features.stream import GROUP, StreamConfig, _redis, _redis_errors, default_consumer_name
from recsys.features.stream_apply import BatchApplier, is_transient
from recsys.features.stream_entries import EntryError, entry_payload, parse_entry
from recsys.features.stream_scripts import DEAD_LETTER_SCRIPT

log = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    applied: int = 0  # entries whose effects were written (first delivery or re-delivery)
    skipped: int = 0  # entries acknowledged before (a re-delivery after a lost reply)
    failures: int = 0  # failed apply attempts (each one retried)
    reclaimed: int = 0  # entries taken over from another consumer
    dead_lettered: int = 0  # entries moved to the dead-letter stream
    invalidation_failures: int = 0  # on_applied calls that raised (the users stay queued)
    consumers_deleted: int = 0  # dead consumer names removed from the group


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class StreamConsumer:
    """Applies stream entries to the overlay; ``run`` loops until stopped, ``drain`` until idle."""

    def __init__(self, cfg: FeatureStoreConfig, name: str | None = None, stream_cfg: StreamConfig | None = None,
                 invalidate_prefix: str = "", invalidate_ttl_s: int = 7 * 86400,
                 on_applied: Callable[[list[dict]], None] | None = None, archive: EventLog | None = None):
        """``invalidate_prefix``: the result cache's key prefix on this same Redis (the script bumps
        ``<prefix>:gen:{u:<id>}``). ``on_applied``: invalidates a cache elsewhere; called with one
        ``{"user_id": ...}`` record per queued user, raising means "not done" (retried)."""
        self.cfg = cfg
        self.name = name or default_consumer_name()
        self.stream_cfg = stream_cfg or StreamConfig()
        self.keys = OverlayKeys(cfg.project)
        self.on_applied = on_applied
        self.archive = archive
        # socket timeout above BLOCK, so an idle XREADGROUP is not mistaken for a dead Redis
        self.redis = _redis(cfg, self.stream_cfg.block_ms / 1000 + max(cfg.read_timeout_s, 1.0))
        self._dead_letter = self.redis.register_script(DEAD_LETTER_SCRIPT)
        self.applier = BatchApplier(cfg, self.redis, self.keys, self.stream_cfg, cache_prefix=invalidate_prefix,
                                    cache_ttl_s=int(invalidate_ttl_s), queue_invalidations=on_applied is not None)
        self._errors = _redis_errors()
        self._group_ready = False
        self._last_reclaim = 0.0
        self._last_trim = 0.0
        self.stats = ConsumerStats()
        self.invalidations = InvalidationQueue(self.redis, self.keys, on_applied, self.name, self.stats)
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

    # ------------------------------------------------------------------ one step
    def _apply(self, entries: list[tuple[str, dict]]) -> int:
        """Apply parsed entries; returns how many were new (not acknowledged before)."""
        return self.applier.apply(entries) if entries else 0

    def dead_letter(self, letters: Sequence[tuple[str, str, str, int]]) -> int:
        """Acknowledge and move (stream id, payload, error, deliveries) to the dead-letter stream, atomically."""
        if not letters:
            return 0
        args: list = [GROUP, self.stream_cfg.dead_letter_max_len]
        for sid, payload, error, deliveries in letters:
            log.error("event consumer %s: stream entry %s dead-lettered after %d deliveries: %s",
                      self.name, sid, deliveries, error)
            args += [sid, payload, error[:2000], deliveries]
        moved = int(self._dead_letter(keys=[self.keys.stream, self.keys.dead_letters], args=args))
        self.stats.dead_lettered += moved
        return moved

    def _deliveries(self, sid: str) -> int:
        rows = self.redis.xpending_range(self.keys.stream, GROUP, min=sid, max=sid, count=1)
        return int(rows[0]["times_delivered"]) if rows else 0

    def _process(self, raw: list) -> int:
        entries: list[tuple[str, dict]] = []
        payloads: dict[str, str] = {}
        bad: list[tuple[str, str, str, int]] = []
        for sid, fields in raw:
            sid = _s(sid)
            try:
                rec = parse_entry(fields, self.cfg.max_entity_id)
            except EntryError as e:  # the entry itself is wrong: a retry cannot fix it
                bad.append((sid, entry_payload(fields), str(e), 1))
                continue
            entries.append((sid, rec))
            payloads[sid] = entry_payload(fields)
        self.dead_letter(bad)
        if not entries:
            return len(bad)
        # Archive *before* the apply acknowledges the entries: if the script runs but its reply is lost (a
        # Redis stall past the socket timeout), the entries are no longer pending and would never reach the
        # archive. At-least-once: a retried batch may repeat records, which carry their ``event_id``
        # (``read_log(..., unique_key="event_id")`` drops the repeats).
        if self.archive is not None:
            try:
                self.archive.append([r for _, r in entries])
            except OSError as e:  # the offline archive is best effort; the stream stays the record of truth
                log.warning("event archive append failed: %s", e.strerror)
        try:
            new = self._apply(entries)
        except Exception as e:  # noqa: BLE001 - classified below
            if is_transient(e):
                raise
            self.stats.failures += 1
            new = self._apply_one_by_one(entries, payloads, e)
        self.stats.applied += new
        self.stats.skipped += len(entries) - new
        self.flush_invalidations()
        return len(entries) + len(bad)

    def _apply_one_by_one(self, entries: list[tuple[str, dict]], payloads: dict[str, str],
                          batch_error: Exception) -> int:
        """Isolate the entries that fail: apply the others; a failing one waits for ``max_deliveries``."""
        log.warning("event consumer %s: batch of %d failed (%s: %s); applying one by one", self.name,
                    len(entries), type(batch_error).__name__, batch_error)
        new, dead = 0, []
        for sid, rec in entries:
            try:
                new += self._apply([(sid, rec)])
            except Exception as e:  # noqa: BLE001
                if is_transient(e):
                    raise
                deliveries = self._deliveries(sid)
                if deliveries >= self.stream_cfg.max_deliveries:
                    dead.append((sid, payloads[sid], f"{type(e).__name__}: {e}", deliveries))
                else:
                    log.warning("event consumer %s: entry %s failed (delivery %d of %d): %s", self.name, sid,
                                deliveries, self.stream_cfg.max_deliveries, e)
        self.dead_letter(dead)
        return new

    def flush_invalidations(self) -> int:
        """Call ``on_applied`` for the users queued by acknowledged events (:mod:`.invalidation_queue`)."""
        return self.invalidations.flush()

    def pending_invalidations(self) -> int:
        return self.invalidations.pending()

    def poll_once(self, block_ms: int | None = None) -> int:
        """Own pending entries first, then other consumers' stale ones, then new ones. Raises on Redis errors."""
        self.ensure_group()
        self.flush_invalidations()
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
        # every 30 s, or twice per retention when that is shorter (else the kept window overshoots it)
        if now - self._last_trim >= max(1.0, min(30.0, self.stream_cfg.retention_s / 2)):
            self._last_trim = now
            self.trim()
            self.delete_dead_consumers()
        block = self.stream_cfg.block_ms if block_ms is None else block_ms
        new = self.redis.xreadgroup(GROUP, self.name, {self.keys.stream: ">"}, count=n, block=block or None)
        raw = new[0][1] if new else []
        return self._process(raw) if raw else 0

    def trim(self) -> None:
        """Drop applied entries older than ``retention_s`` (never an unapplied one; :mod:`.stream_upkeep`)."""
        upkeep.trim(self.redis, self.keys, self.stream_cfg.retention_s)

    def delete_dead_consumers(self) -> int:
        """Delete other consumer names idle ``dead_consumer_idle_ms`` with nothing pending (:mod:`.stream_upkeep`)."""
        deleted = upkeep.delete_dead_consumers(self.redis, self.keys, self.name, self.stream_cfg.dead_consumer_idle_ms)
        self.stats.consumers_deleted += deleted
        return deleted

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
                log.exception("event consumer %s: poll failed; retrying", self.name)
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
        self.applier.close()

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Apply until nothing is pending, new or owed an invalidation (CLI, tests); False on timeout/error."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.poll_once(block_ms=0) == 0 and self.backlog() == 0 and self.pending_invalidations() == 0:
                    return True
            except self._errors:
                self.stats.failures += 1
                time.sleep(self.stream_cfg.retry_initial_s)
        try:
            return self.backlog() == 0 and self.pending_invalidations() == 0
        except self._errors:
            return False

    def backlog(self) -> int:
        """Entries not yet applied: pending in the group plus not yet delivered (Redis >= 7 'lag')."""
        return upkeep.backlog(self.redis, self.keys)
