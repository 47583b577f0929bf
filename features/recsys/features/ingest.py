"""Real-time path: validate events, append them to the durable event stream, apply them online.

Order matters: nothing is written unless every event of the call validates (all-or-nothing); then
the whole call is appended to the Redis stream in one MULTI/EXEC (:class:`~recsys.features.stream.EventStream`).
That append is the acknowledgement: once it returns, the event is durable and will be applied to the
online features by a :class:`~recsys.features.stream.StreamConsumer` (atomic counters, retried until
done), so a Redis stall delays the update but never drops it. When the append itself fails the caller
gets :class:`~recsys.features.stream.EventLogUnavailable` and nothing was accepted.

Events from anyone: users and items the offline build has never seen are accepted (only the id
range 0..max_entity_id is checked) - a new user's first clicks are exactly what real-time personalisation
is for.
Serving appends and lets its per-replica consumer apply (``accept``); the CLI and tests call
:func:`ingest_events`, which appends and then drains the stream in-process, so the online features
are updated when it returns (``pushed``).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
import pandas as pd

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import EventValidationError
from recsys.features.event_log import EventLog
from recsys.features.stream import EventStream, StreamConfig, StreamConsumer, default_consumer_name
from recsys.platform.data.schema import EVENT_TYPES

REQUIRED_FIELDS = ("user_id", "item_id", "event_type")
OPTIONAL_FIELDS = ("timestamp", "rating", "event_id", "request_id")
RATING_RANGE = (1.0, 5.0)
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_BATCH = 1000
"""Most events one call may carry (``POST /v1/events`` with a list; documented in the OpenAPI schema)."""


@dataclass
class IngestResult:
    """What happened to the events of one call."""

    event_ids: list[str]
    stream_ids: list[str] = field(default_factory=list)  # positions in the durable event stream
    pushed: bool = False  # online features updated (only ``ingest``, which waits; ``accept`` does not)
    online_error: str | None = None
    records: list[dict] = field(default_factory=list)
    latency_ms: float = 0.0

    @property
    def event_id(self) -> str:
        return self.event_ids[0]


# ------------------------------------------------------------------ validation
def _as_id(event: Mapping, name: str, index: int | None, max_id: int = INT64_MAX) -> int:
    v = event[name]
    if isinstance(v, bool) or v is None:
        raise EventValidationError(name, f"must be an integer id, got {v!r}", index)
    if isinstance(v, int | np.integer) or isinstance(v, float) and v.is_integer():
        out = int(v)
    elif isinstance(v, str) and v.strip().lstrip("-").isdigit():
        out = int(v.strip())
    else:
        raise EventValidationError(name, f"must be an integer id, got {v!r}", index)
    if not INT64_MIN <= out <= INT64_MAX:
        raise EventValidationError(name, f"{out} is outside the int64 range", index)
    if not 0 <= out <= max_id:
        raise EventValidationError(name, f"{out} is outside the accepted id range 0..{max_id}", index)
    return out


def _as_time(v, index: int | None, now: float, max_skew_s: float) -> tuple[pd.Timestamp, bool]:
    """(event time, clamped): a time ahead of ``now + max_skew_s`` is clamped to now."""
    try:
        if isinstance(v, bool) or v is None:
            raise ValueError
        if isinstance(v, int | float | np.integer | np.floating):
            if not math.isfinite(float(v)):
                raise ValueError
            ts = pd.Timestamp(float(v), unit="s", tz="UTC")
        else:
            ts = pd.Timestamp(v)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if pd.isna(ts):
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        raise EventValidationError("timestamp", f"not an ISO-8601 time or unix seconds: {v!r}", index) from None
    if ts < EARLIEST:
        raise EventValidationError("timestamp", f"{ts.isoformat()} is before {EARLIEST.date()}", index)
    if ts.timestamp() > now + max_skew_s:
        # A client clock ahead of ours: the event happened, just not "in the future" - count it as now
        # (the record keeps the client's time in client_timestamp).
        return pd.Timestamp(now, unit="s", tz="UTC"), True
    return ts, False


def validate_event(event: Mapping, now: float | None = None, max_skew_s: float = 300.0,
                   index: int | None = None, max_id: int = INT64_MAX) -> dict:
    """Check one raw event; return the normalized log record or raise EventValidationError(field).

    Any user and item id in ``0..max_id`` is accepted (new users and items included): a negative or
    absurdly large id is a client bug, and each accepted id costs Redis memory until its TTL. A missing
    ``timestamp`` means now.
    """
    if not isinstance(event, Mapping):
        raise EventValidationError("event", f"must be a JSON object, got {type(event).__name__}", index)
    now = time.time() if now is None else now
    for name in REQUIRED_FIELDS:
        if name not in event or event[name] is None:
            raise EventValidationError(name, "missing", index)
    unknown = sorted(set(event) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise EventValidationError(unknown[0], f"unknown field (allowed: {REQUIRED_FIELDS + OPTIONAL_FIELDS})", index)
    user_id = _as_id(event, "user_id", index, max_id)
    item_id = _as_id(event, "item_id", index, max_id)
    etype = event["event_type"]
    if etype not in EVENT_TYPES:
        raise EventValidationError("event_type", f"{etype!r} is not one of {list(EVENT_TYPES)}", index)
    raw_ts = event.get("timestamp")
    if raw_ts is None:
        ts, clamped = pd.Timestamp(now, unit="s", tz="UTC"), False
    else:
        ts, clamped = _as_time(raw_ts, index, now, max_skew_s)
    rating = event.get("rating")
    if etype == "rating":
        if rating is None or isinstance(rating, bool) or not isinstance(rating, int | float):
            raise EventValidationError("rating", "a rating event needs a numeric rating", index)
        if not (RATING_RANGE[0] <= float(rating) <= RATING_RANGE[1]):
            raise EventValidationError("rating", f"{rating} is outside {RATING_RANGE[0]:g}..{RATING_RANGE[1]:g}",
                                       index)
        rating = float(rating)
    elif rating is not None:
        raise EventValidationError("rating", f"only rating events carry a rating (event_type={etype})", index)
    for name in ("event_id", "request_id"):
        if name in event and event[name] is not None and not isinstance(event[name], str):
            raise EventValidationError(name, "must be a string", index)
    record = {
        "event_id": event.get("event_id") or uuid.uuid4().hex,
        "user_id": user_id, "item_id": item_id, "event_type": etype,
        "timestamp": ts.isoformat().replace("+00:00", "Z"), "ts": ts.timestamp(), "rating": rating,
        "request_id": event.get("request_id"),
        "ingested_at": datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z"),
    }
    if clamped:
        record["client_timestamp"] = str(raw_ts)
    if event.get("event_id"):
        record["client_event_id"] = True  # retries of this id are applied once (realtime.event_args)
    return record


# ------------------------------------------------------------------ ingestion
class EventIngestor:
    """Validates and appends; one per process (holds the stream client)."""

    def __init__(self, cfg: FeatureStoreConfig, stream_cfg: StreamConfig | None = None):
        self.cfg = cfg
        self.stream = EventStream(cfg, stream_cfg)

    def validate(self, events: Sequence[Mapping]) -> list[dict]:
        now = time.time()
        return [validate_event(e, now, self.cfg.max_clock_skew_s, index=i if len(events) > 1 else None,
                               max_id=self.cfg.max_entity_id)
                for i, e in enumerate(events)]

    def accept(self, events: Sequence[Mapping]) -> IngestResult:
        """Validate all, then append all (the durable acknowledgement); the online update follows."""
        t0 = time.perf_counter()
        records = self.validate(events)  # raises before anything is written
        ids = self.stream.append(records)
        return IngestResult(event_ids=[r["event_id"] for r in records], stream_ids=ids, records=records,
                            latency_ms=(time.perf_counter() - t0) * 1000)

    async def accept_async(self, events: Sequence[Mapping]) -> IngestResult:
        """:meth:`accept` on the caller's event loop (the HTTP path: no thread hop per request)."""
        t0 = time.perf_counter()
        records = self.validate(events)  # raises before anything is written
        ids = await self.stream.append_async(records)
        return IngestResult(event_ids=[r["event_id"] for r in records], stream_ids=ids, records=records,
                            latency_ms=(time.perf_counter() - t0) * 1000)

    def ingest(self, events: Sequence[Mapping], timeout_s: float = 10.0) -> IngestResult:
        """``accept`` + apply in-process: the online features include the events when this returns."""
        result = self.accept(events)
        if not result.records:
            result.pushed = True
            return result
        consumer = StreamConsumer(self.cfg, name=f"ingest-{default_consumer_name()}",
                                  archive=EventLog(self.cfg.log_path))
        try:
            result.pushed = consumer.drain(timeout_s)
            if not result.pushed:
                result.online_error = (f"online store {self.cfg.redis_target} did not apply the events within "
                                       f"{timeout_s:g}s; they stay in the stream and are applied by the next consumer")
        finally:
            consumer.stop()
        return result


@lru_cache(maxsize=8)
def _ingestor(cfg_json: str) -> EventIngestor:
    return EventIngestor(FeatureStoreConfig.model_validate_json(cfg_json))


def get_ingestor(cfg: FeatureStoreConfig) -> EventIngestor:
    """The process-wide ingestor for ``cfg`` (creating a Feast store costs ~0.5 s, so it is cached)."""
    return _ingestor(cfg.model_dump_json())


def ingest_event(cfg: FeatureStoreConfig, event: Mapping) -> IngestResult:
    """Validate one event, append it to the event stream, apply it online before returning."""
    return get_ingestor(cfg).ingest([event])


def ingest_events(cfg: FeatureStoreConfig, events: Sequence[Mapping]) -> IngestResult:
    """Batch variant: all events validate or none is written; one atomic stream append, then applied."""
    return get_ingestor(cfg).ingest(list(events))
