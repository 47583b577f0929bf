"""The durable event log (a Redis stream) and the consumer that turns it into online features.

Why a stream: an event is acknowledged to the client (HTTP 202) only once it is in the log; the online
update happens after that, in a consumer that retries until it succeeds. So a Redis stall delays the
update but cannot drop it, and the request path is one MULTI/EXEC of XADDs (no read-modify-write).

* :class:`EventStream` appends a batch atomically (MULTI/EXEC): all events of a call are in the log or
  none is, and an error becomes :class:`EventLogUnavailable` (HTTP 503 + Retry-After).
  The append is capped (``max_len``): when the stream is full, applied entries make room (XTRIM MINID);
  when only unapplied entries are left, the call is refused with :class:`EventLogFull` (HTTP 503 +
  Retry-After), never trimmed into events not yet applied. A Redis that refuses writes (OOM under
  ``maxmemory-policy noeviction``) is an :class:`EventLogUnavailable` too.
* :class:`~recsys.features.stream_consumer.StreamConsumer` applies entries to the overlay (see there:
  validation on read, dead letters, the invalidation queue, trimming, dead consumers).

Durability is Redis's: run it with ``appendonly yes`` (docs/operations.md) so an acknowledged event
survives a Redis restart too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import FeatureStoreUnavailable
from recsys.features.keys import GROUP, OverlayKeys
from recsys.features.redis_clients import async_client
from recsys.features.stream_scripts import APPEND_SCRIPT

log = logging.getLogger(__name__)


class EventLogUnavailable(FeatureStoreUnavailable):
    """The event stream could not be written: nothing was accepted, the client should retry."""


class EventLogFull(EventLogUnavailable):
    """The stream is at its cap with unapplied entries only (consumers are behind): nothing was accepted."""


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
    max_len: int = Field(1_000_000, ge=0, description="Cap on the stream's length (0 = none): applied entries "
                         "make room, unapplied ones never do (the append is refused with 503 instead)")
    max_deliveries: int = Field(5, ge=1, le=1000, description="Attempts before an entry that fails to apply "
                                "is moved to the dead-letter stream (XPENDING delivery count)")
    dead_letter_max_len: int = Field(100_000, ge=1, description="Cap on the dead-letter stream (oldest dropped)")
    dead_consumer_idle_ms: int = Field(3_600_000, ge=1000, description="Delete a consumer name idle this long "
                                       "with nothing pending (XGROUP DELCONSUMER: replicas that went away)")
    apply_window_s: int = Field(900, ge=60, description="Redis Cluster only: how long a per-entity marker "
                                "remembers an applied stream id (a re-delivery within it is not counted twice)")


def default_consumer_name() -> str:
    """hostname-pid: unique per process, and stable for a process's lifetime (its pending entries stay its own)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _redis(cfg: FeatureStoreConfig, timeout_s: float):
    """A client with no retries (the callers retry with their own back-off); a Cluster client for a cluster URL."""
    from recsys.features.redis_clients import sync_client

    return sync_client(cfg, timeout_s)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.RedisError, OSError, FeatureStoreUnavailable)


def _ids(raw: Sequence) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else str(i) for i in raw]


class EventStream:
    """Request-path writer: append validated records to the stream, atomically per call, under the cap."""

    def __init__(self, cfg: FeatureStoreConfig, stream_cfg: StreamConfig | None = None):
        self.cfg = cfg
        self.stream_cfg = stream_cfg or StreamConfig()
        self.keys = OverlayKeys(cfg.project)
        self.redis = _redis(cfg, self.stream_cfg.append_timeout_s)
        self._script = self.redis.register_script(APPEND_SCRIPT)
        self._aredis = async_client(cfg, self.stream_cfg.append_timeout_s)
        self._ascripts: dict[int, object] = {}
        self._errors = _redis_errors()
        self.refused_full = 0  # appends refused at the cap (metric: recsys_event_log_refused_total{reason="full"})
        self.refused_oom = 0  # appends refused by a Redis out of memory

    def _args(self, records: Sequence[dict]) -> list:
        return [GROUP, self.stream_cfg.max_len, *(json.dumps(r, separators=(",", ":")) for r in records)]

    def append(self, records: Sequence[dict]) -> list[str]:
        """Append every record atomically (one script); returns the stream ids. Raises EventLogUnavailable."""
        if not records:
            return []
        try:
            return _ids(self._script(keys=[self.keys.stream], args=self._args(records)))
        except self._errors as e:
            raise self._unavailable(e) from e

    async def append_async(self, records: Sequence[dict]) -> list[str]:
        """:meth:`append` on the caller's event loop (redis.asyncio): the ``POST /v1/events`` path."""
        if not records:
            return []
        try:
            client = self._aredis.get()
            script = self._ascripts.get(id(client))
            if script is None:
                script = self._ascripts[id(client)] = client.register_script(APPEND_SCRIPT)
            return _ids(await script(keys=[self.keys.stream], args=self._args(records)))
        except self._errors as e:
            raise self._unavailable(e) from e

    def _unavailable(self, e: BaseException) -> EventLogUnavailable:
        text = str(e)
        if "STREAMFULL" in text:
            self.refused_full += 1
            return EventLogFull(f"event log {self.cfg.redis_target} is full: {text.split('STREAMFULL', 1)[1].strip()}"
                                "; consumers are behind, retry later")
        if text.startswith("OOM") or "maxmemory" in text:
            self.refused_oom += 1
            return EventLogUnavailable(f"event log {self.cfg.redis_target} refused the write: Redis is out of "
                                       "memory (maxmemory reached); retry later")
        return EventLogUnavailable(f"event log {self.cfg.redis_target} unavailable: {type(e).__name__}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.redis.close()

    async def aclose(self) -> None:
        """Both clients (the request path's asyncio one belongs to the running loop)."""
        self.close()
        self._ascripts.clear()
        await self._aredis.aclose()



from recsys.features.stream_consumer import ConsumerStats, StreamConsumer  # noqa: E402 - re-export (public API)

__all__ = ["GROUP", "ConsumerStats", "EventLogFull", "EventLogUnavailable", "EventStream", "StreamConfig",
           "StreamConsumer", "default_consumer_name"]
