"""Real-time path: validate an event, append it to the durable log, push updated features online.

Order matters: nothing is written unless every event of the call validates (all-or-nothing);
the log append (fsync'd) happens before the online update, so an event the caller was told about
is never lost even if Redis is down - the result then says ``pushed=False`` and the log can be
replayed.  The online update is a read-modify-write of the user's and the item's current rows
(one pipelined read), written back through Feast push sources (``PushMode.ONLINE``), so the very
next ``OnlineFeatureClient.fetch`` sees the new counts, recency and recent items.

Windowed counts are incremented when the event falls inside the window at ingestion time; they
are exact again after the next batch build + materialize (which also decays old events out).
Concurrent ingesters of the *same* user can lose an increment (last push wins); serving runs one
ingester per process and the nightly build is the source of truth.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import EventValidationError, FeatureStoreError, FeatureStoreUnavailable
from recsys.features.event_log import EventLog
from recsys.features.offline import ITEM_IDS_FILE, USER_IDS_FILE
from recsys.features.schema import (
    DAYS_OF_WEEK,
    EVENT_NAMES,
    HOUR_BUCKETS,
    ITEM_PUSH_SOURCE,
    ITEM_STATS_FEATURES,
    USER_PUSH_SOURCE,
    USER_RAW_FEATURES,
    WINDOWS,
    day_of_week,
    hour_bucket,
    smoothed_rate,
)
from recsys.platform.data.schema import EVENT_TYPES, EVENT_WEIGHTS

REQUIRED_FIELDS = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL_FIELDS = ("rating", "event_id", "request_id")
RATING_RANGE = (1.0, 5.0)
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")


@dataclass
class IngestResult:
    """What happened to the events of one call."""

    event_ids: list[str]
    log_offset: int  # byte offset of the first record in the log
    pushed: bool  # online features updated
    online_error: str | None = None
    users_updated: list[int] = field(default_factory=list)
    items_updated: list[int] = field(default_factory=list)
    latency_ms: float = 0.0

    @property
    def event_id(self) -> str:
        return self.event_ids[0]


# ------------------------------------------------------------------ validation
class Catalog:
    """Known user and item ids (written by the offline build), for rejecting unknown references."""

    def __init__(self, user_ids: np.ndarray, item_ids: np.ndarray):
        self.user_ids = frozenset(int(x) for x in user_ids)
        self.item_ids = frozenset(int(x) for x in item_ids)

    @classmethod
    def load(cls, offline_dir: Path) -> Catalog:
        u, i = offline_dir / USER_IDS_FILE, offline_dir / ITEM_IDS_FILE
        if not u.exists() or not i.exists():
            raise FeatureStoreError(f"no catalog in {offline_dir}: run `recsys features build` first")
        return cls(np.load(u), np.load(i))


def _as_id(event: Mapping, name: str, index: int | None) -> int:
    v = event[name]
    if isinstance(v, bool) or v is None:
        raise EventValidationError(name, f"must be an integer id, got {v!r}", index)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v.strip())
    raise EventValidationError(name, f"must be an integer id, got {v!r}", index)


def _as_time(v, index: int | None, now: float, max_skew_s: float) -> pd.Timestamp:
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
        raise EventValidationError("timestamp", f"{ts.isoformat()} is in the future", index)
    return ts


def validate_event(event: Mapping, catalog: Catalog, now: float | None = None, max_skew_s: float = 300.0,
                   index: int | None = None) -> dict:
    """Check one raw event; return the normalized log record or raise EventValidationError(field)."""
    if not isinstance(event, Mapping):
        raise EventValidationError("event", f"must be a JSON object, got {type(event).__name__}", index)
    now = time.time() if now is None else now
    for name in REQUIRED_FIELDS:
        if name not in event or event[name] is None:
            raise EventValidationError(name, "missing", index)
    unknown = sorted(set(event) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise EventValidationError(unknown[0], f"unknown field (allowed: {REQUIRED_FIELDS + OPTIONAL_FIELDS})", index)
    user_id = _as_id(event, "user_id", index)
    if user_id not in catalog.user_ids:
        raise EventValidationError("user_id", f"unknown user {user_id}", index)
    item_id = _as_id(event, "item_id", index)
    if item_id not in catalog.item_ids:
        raise EventValidationError("item_id", f"unknown item {item_id}", index)
    etype = event["event_type"]
    if etype not in EVENT_TYPES:
        raise EventValidationError("event_type", f"{etype!r} is not one of {list(EVENT_TYPES)}", index)
    ts = _as_time(event["timestamp"], index, now, max_skew_s)
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
    return {
        "event_id": event.get("event_id") or uuid.uuid4().hex,
        "user_id": user_id, "item_id": item_id, "event_type": etype,
        "timestamp": ts.isoformat().replace("+00:00", "Z"), "rating": rating,
        "request_id": event.get("request_id"),
        "ingested_at": datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z"),
    }


# ------------------------------------------------------------------ online update
def _blank(features: Mapping[str, str]) -> dict:
    return {n: ([] if k.endswith("[]") else 0.0) for n, k in features.items()}


def _count_event(row: dict, rec: dict, prefix: str, ts: float, now: float) -> dict:
    """Copy of ``row`` with the event counted in every window it falls in, and the rating averaged in.

    User and item views keep the same counters under their own prefix (``user_clicks_7d``, ``item_clicks_7d``).
    """
    out = dict(row)
    plural = EVENT_NAMES[rec["event_type"]]
    for suffix, days in WINDOWS:
        if days is None or now - ts <= days * 86400:
            out[f"{prefix}_{plural}_{suffix}"] = float(out.get(f"{prefix}_{plural}_{suffix}", 0.0)) + 1.0
    if rec["rating"] is not None:
        n = float(out[f"{prefix}_ratings_all"])
        out[f"{prefix}_avg_rating"] = (float(out[f"{prefix}_avg_rating"]) * (n - 1) + rec["rating"]) / max(n, 1.0)
    return out


def apply_event_to_user(row: dict, rec: dict, item_multihot: Sequence[float], now: float,
                        recent_items: int) -> dict:
    """New user feature values after one event (pure; used by ingest and its tests)."""
    ts = pd.Timestamp(rec["timestamp"]).timestamp()
    out = _count_event(row, rec, "user", ts, now)
    out["user_last_event_at"] = max(float(out.get("user_last_event_at") or 0.0), ts)
    # distinct items, most recent occurrence first: the order training reads (recsys.training.base.user_histories)
    old = [int(x) for x in out.get("user_recent_item_ids") or [] if int(x) != int(rec["item_id"])]
    out["user_recent_item_ids"] = ([int(rec["item_id"])] + old)[:recent_items]
    weight = EVENT_WEIGHTS[rec["event_type"]] * (rec["rating"] / 5.0 if rec["rating"] is not None else 1.0)
    mh = np.asarray(item_multihot or [], dtype=np.float64)
    gw = np.asarray(out.get("user_genre_weights") or [], dtype=np.float64)
    g = max(len(mh), len(gw))
    gw = np.pad(gw, (0, g - len(gw))) + weight * np.pad(mh, (0, g - len(mh)))
    out["user_genre_weights"] = gw.astype(np.float32).tolist()
    top = np.argsort(-gw, kind="stable")[:3]
    out["user_top_genres"] = [int(i) for i in top if gw[i] > 0]
    for name, idx, width in (("user_hour_counts", int(hour_bucket(ts)), HOUR_BUCKETS),
                             ("user_dow_counts", int(day_of_week(ts)), DAYS_OF_WEEK)):
        counts = list(out.get(name) or []) + [0.0] * width
        counts = [float(x) for x in counts[:width]]
        counts[idx] += 1.0
        out[name] = counts
    return out


def apply_event_to_item(row: dict, rec: dict, now: float) -> dict:
    ts = pd.Timestamp(rec["timestamp"]).timestamp()
    out = _count_event(row, rec, "item", ts, now)
    out["item_ctr_30d"] = float(smoothed_rate(out["item_clicks_30d"], out["item_views_30d"]))
    out["item_cvr_30d"] = float(smoothed_rate(out["item_purchases_30d"], out["item_clicks_30d"]))
    return out


class EventIngestor:
    """Holds the catalog, the log, a Feast store (the writer) and a reader; one per process."""

    def __init__(self, cfg: FeatureStoreConfig):
        from recsys.features.online import OnlineFeatureClient
        from recsys.features.store import feature_store

        self.cfg = cfg
        self.catalog = Catalog.load(cfg.offline_dir)
        self.log = EventLog(cfg.log_path)
        self.reader = OnlineFeatureClient(cfg, item_features=[*ITEM_STATS_FEATURES, "item_genre_multihot"])
        self.store = feature_store(cfg)
        # Feast builds its own redis client from feature_store.yaml (long materialization timeout,
        # retries with backoff); pushes on the request path share the reader's fast-failing client.
        online_store = self.store._get_provider().online_store
        if hasattr(online_store, "_client"):
            online_store._client = self.reader.redis
        self._lock = threading.Lock()

    def validate(self, events: Sequence[Mapping]) -> list[dict]:
        now = time.time()
        return [validate_event(e, self.catalog, now, self.cfg.max_clock_skew_s, index=i if len(events) > 1 else None)
                for i, e in enumerate(events)]

    def ingest(self, events: Sequence[Mapping]) -> IngestResult:
        t0 = time.perf_counter()
        records = self.validate(events)  # raises before anything is written
        if not records:
            return IngestResult(event_ids=[], log_offset=self.log.size(), pushed=True)
        offset = self.log.append(records)
        result = IngestResult(event_ids=[r["event_id"] for r in records], log_offset=offset, pushed=False)
        try:
            with self._lock:
                result.users_updated, result.items_updated = self._push(records)
            result.pushed = True
        except FeatureStoreUnavailable as e:
            result.online_error = str(e)
        result.latency_ms = (time.perf_counter() - t0) * 1000
        return result

    def _push(self, records: list[dict]) -> tuple[list[int], list[int]]:
        from feast.data_source import PushMode

        users = list(dict.fromkeys(r["user_id"] for r in records))
        items = list(dict.fromkeys(r["item_id"] for r in records))
        rows = self.reader._hmget_all([self.reader.layout.key("user_id", u) for u in users],
                                      [self.reader.layout.key("item_id", i) for i in items])
        user_rows = {u: self.reader._user_dict(r) for u, r in zip(users, rows[: len(users)], strict=True)}
        cols, missing = self.reader._item_columns(rows[len(users):])
        item_rows: dict[int, dict] = {}
        multihot: dict[int, list] = {}
        for j, i in enumerate(items):
            item_rows[i] = {n: float(cols[n][j]) for n in ITEM_STATS_FEATURES}
            multihot[i] = cols["item_genre_multihot"][j] or []
        user_ts = {u: (r or {}).get("_ts:user_stats", 0.0) for u, r in user_rows.items()}
        item_ts = {i: 0.0 for i in items}  # item rows: timestamps read below with the user rows' method
        item_ts.update(self._item_timestamps(items))
        now = time.time()
        state_u = {u: {**_blank(USER_RAW_FEATURES), **{k: v for k, v in (r or {}).items() if not k.startswith("_ts:")}}
                   for u, r in user_rows.items()}
        state_i = dict(item_rows)
        for rec in records:
            state_u[rec["user_id"]] = apply_event_to_user(state_u[rec["user_id"]], rec, multihot[rec["item_id"]],
                                                          now, self.cfg.recent_items)
            state_i[rec["item_id"]] = apply_event_to_item(state_i[rec["item_id"]], rec, now)

        def stamp(prev: float) -> pd.Timestamp:
            # Feast skips writes not newer than the stored row: use ingestion time, strictly increasing.
            return pd.Timestamp(max(now, prev + 0.001), unit="s", tz="UTC").floor("us")

        udf = pd.DataFrame([{"user_id": u, "event_timestamp": stamp(user_ts[u]),
                             **_typed(state_u[u], USER_RAW_FEATURES)} for u in users])
        idf = pd.DataFrame([{"item_id": i, "event_timestamp": stamp(item_ts[i]),
                             **_typed(state_i[i], ITEM_STATS_FEATURES)} for i in items])
        try:
            self.store.push(USER_PUSH_SOURCE, udf, to=PushMode.ONLINE)
            self.store.push(ITEM_PUSH_SOURCE, idf, to=PushMode.ONLINE)
        except self.reader._redis_errors as e:
            raise FeatureStoreUnavailable(f"online store {self.cfg.redis_url} unavailable during push: {e}") from e
        return users, items

    def _item_timestamps(self, items: list[int]) -> dict[int, float]:
        ts_field = self.reader.layout.ts_field("item_stats")
        try:
            with self.reader.redis.pipeline(transaction=False) as pipe:
                for i in items:
                    pipe.hget(self.reader.layout.key("item_id", i), ts_field)
                raw = pipe.execute()
        except self.reader._redis_errors as e:
            raise FeatureStoreUnavailable(f"online store {self.cfg.redis_url} unavailable: {e}") from e
        return {i: self.reader._parse_ts(r) for i, r in zip(items, raw, strict=True)}


def _typed(row: Mapping, features: Mapping[str, str]) -> dict:
    out = {}
    for name, kind in features.items():
        v = row.get(name)
        if kind == "f32":
            out[name] = np.float32(v or 0.0)
        elif kind == "f64":
            out[name] = float(v or 0.0)
        elif kind == "i64":
            out[name] = int(v or 0)
        elif kind == "i64[]":
            out[name] = [int(x) for x in (v or [])]
        else:
            out[name] = [float(x) for x in (v or [])]
    return out


@lru_cache(maxsize=8)
def _ingestor(cfg_json: str) -> EventIngestor:
    return EventIngestor(FeatureStoreConfig.model_validate_json(cfg_json))


def get_ingestor(cfg: FeatureStoreConfig) -> EventIngestor:
    """The process-wide ingestor for ``cfg`` (creating a Feast store costs ~0.5 s, so it is cached)."""
    return _ingestor(cfg.model_dump_json())


def ingest_event(cfg: FeatureStoreConfig, event: Mapping) -> IngestResult:
    """Validate one event, append it to the log (fsync), update the online features."""
    return get_ingestor(cfg).ingest([event])


def ingest_events(cfg: FeatureStoreConfig, events: Sequence[Mapping]) -> IngestResult:
    """Batch variant: all events validate or none is written; one log append, one push per entity."""
    return get_ingestor(cfg).ingest(list(events))
