"""Online feature reads for serving: one user + N candidate items in one Redis round trip.

Feast writes the online store (materialize, push); this module reads Feast's Redis layout
directly (https://github.com/feast-dev/feast/blob/master/docs/specs/online_store_format.md):
one hash per entity key (``serialize_entity_key(key) + project``), one field per feature
(``mmh3("<view>:<feature>")``) holding a serialized ``feast.types.Value`` and ``_ts:<view>`` holding
the row timestamp.  The key/field functions are Feast's own, so the two paths cannot drift, and a
test compares this reader with ``FeatureStore.get_online_features`` value by value.

Why not ``get_online_features``: it costs several milliseconds of Python per 100 entities
(protobuf responses, type conversion); serving fetches 500 candidates per request.  Here the
500 HMGETs go out as one pipeline, and scalar float features are decoded with numpy in bulk.
Every Redis call has connect/read timeouts and no retries, so a dead Redis surfaces as
:class:`FeatureStoreUnavailable` within about ``connect_timeout_s`` instead of hanging.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import FeatureStoreUnavailable
from recsys.features.realtime import READ_ITEMS_SCRIPT, OverlayKeys, merge_items, merge_user
from recsys.features.schema import (
    DAYS_OF_WEEK,
    HOUR_BUCKETS,
    ITEM_PROFILE_VIEW,
    ITEM_STATS_VIEW,
    RANKER_FEATURES,
    USER_CONTEXT_VIEW,
    USER_STATS_VIEW,
    VIEW_FEATURES,
    pad_lists,
    ranker_matrix,
)
from recsys.features.seen import recent_distinct
from recsys.features.seen import unpack as unpack_seen

ENTITY_KEY_SERIALIZATION_VERSION = 3
_F32_TAG, _F64_TAG = 0x35, 0x29  # Value.float_val / Value.double_val wire tags (field 6 / 5)

_FIXED_WIDTHS = {"user_hour_counts": HOUR_BUCKETS, "user_dow_counts": DAYS_OF_WEEK}
ITEM_RANKER_INPUTS: tuple[str, ...] = tuple(
    n for n in [*VIEW_FEATURES[ITEM_STATS_VIEW], *VIEW_FEATURES[ITEM_PROFILE_VIEW]]
    if n in RANKER_FEATURES or n in ("item_created_at", "item_genre_multihot", "item_text_hash")
)
"""Item features fetched by default: what the ranker needs (+ the sparse text hash)."""


@dataclass
class OnlineFeatures:
    """Features of one user and N candidate items as of the request time.

    ``items`` is float32 [N, len(RANKER_FEATURES)] (user, item and user x item/context columns);
    rows of items with no online features are zeros in the item columns and ``missing`` is True.
    """

    user: dict[str, float | list]
    items: np.ndarray
    missing: np.ndarray
    recent_item_ids: list[int]
    # every item the user interacted with, oldest first (up to ``seen_items``; may repeat): the seen filter
    seen_item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # the newest ``recent_items`` distinct items, newest first: the models' history (training's order)
    history_item_ids: list[int] = field(default_factory=list)
    user_missing: bool = False
    item_raw: dict[str, np.ndarray] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=lambda: list(RANKER_FEATURES))
    fetch_ms: float = 0.0


def _value_to_python(v):
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    val = getattr(v, kind)
    if kind.endswith("_list_val"):
        return list(val.val)
    return val


class RedisLayout:
    """Feast's Redis key and hash-field names for our entities and views (computed once, cached)."""

    def __init__(self, project: str):
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _mmh3
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._serialize, self._EntityKey, self._Value = serialize_entity_key, EntityKey, Value
        self._project = project.encode()
        self._mmh3 = _mmh3
        self._key_cache: dict[tuple[str, int], bytes] = {}

    def key(self, join_key: str, entity_id: int) -> bytes:
        ck = (join_key, entity_id)
        k = self._key_cache.get(ck)
        if k is None:
            ek = self._EntityKey(join_keys=[join_key], entity_values=[self._Value(int64_val=int(entity_id))])
            k = self._serialize(ek, entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION) + self._project
            if len(self._key_cache) < 2_000_000:
                self._key_cache[ck] = k
        return k

    def field(self, view: str, feature: str) -> bytes:
        return self._mmh3(f"{view}:{feature}")

    @staticmethod
    def ts_field(view: str) -> bytes:
        return f"_ts:{view}".encode()


def _decode_column(values: list, kind: str, value_cls) -> tuple[np.ndarray | list, np.ndarray]:
    """Serialized Feast Values (or None) -> (column, present mask); scalars decoded with numpy in bulk."""
    n = len(values)
    present = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    if kind in ("f32", "f64"):
        width, tag, dtype = (5, _F32_TAG, "<f4") if kind == "f32" else (9, _F64_TAG, "<f8")
        out = np.zeros(n, dtype=np.float64)
        if present.any():
            blob = b"".join(v for v in values if v is not None)
            m = int(present.sum())
            if len(blob) == m * width and all(b == tag for b in blob[::width]):  # all set, same type
                out[present] = np.frombuffer(blob, dtype=np.uint8).reshape(m, width)[:, 1:].copy().view(dtype)[:, 0]
            else:
                for i, v in enumerate(values):
                    if v is not None:
                        p = value_cls()
                        p.ParseFromString(v)
                        x = _value_to_python(p)
                        out[i] = x if isinstance(x, int | float) else 0.0
        return out, present
    col: list = [None] * n
    for i, v in enumerate(values):
        if v is not None:
            p = value_cls()
            p.ParseFromString(v)
            col[i] = _value_to_python(p)
    if kind == "i64":
        return np.array([0 if x is None else x for x in col], dtype=np.int64), present
    return col, present


def materialization_key(project: str) -> str:
    """Redis counter bumped after every successful materialization of ``project`` (see
    :func:`recsys.features.store.materialize`): readers that cache item rows (the serving ingress's
    item-feature snapshot) poll it and re-read everything at once when it moves, instead of waiting
    for their periodic pass."""
    return f"recsys:features:{project}:materialization"


class OnlineFeatureClient:
    """Batch reader of online features; safe to share within a process (redis-py pools connections)."""

    def __init__(self, cfg: FeatureStoreConfig, item_features: Sequence[str] = ITEM_RANKER_INPUTS):
        import redis
        from feast.protos.feast.types.Value_pb2 import Value

        from recsys.features.redis_clients import async_client, sync_client
        from recsys.platform.redis_async import LoopBatchedRedis

        self.cfg = cfg
        self._Value = Value
        # Any client-side Redis failure (refused, timeout, garbage on the wire) means "no features now".
        self._redis_errors = (redis.exceptions.RedisError, OSError)
        self.redis = sync_client(cfg)  # redis.Redis, or RedisCluster for a redis+cluster:// URL
        self._aredis = async_client(cfg)  # fetch_async: the request's own event loop
        # concurrent requests' reads in one event-loop turn share one pipeline (serving's history stage)
        self._abatched = LoopBatchedRedis(self._aredis)
        self.layout = RedisLayout(cfg.project)
        self.overlay = OverlayKeys(cfg.project)
        item_views = {n: v for v in (ITEM_STATS_VIEW, ITEM_PROFILE_VIEW) for n in VIEW_FEATURES[v]}
        unknown = [n for n in item_features if n not in item_views]
        if unknown:
            raise ValueError(f"unknown item features {unknown}")
        # (view, feature, kind) in HMGET order; the view's _ts field closes each view's block.
        self._user_fields = self._plan([(v, n) for v in (USER_STATS_VIEW, USER_CONTEXT_VIEW)
                                        for n in VIEW_FEATURES[v]])
        self._item_fields = self._plan([(item_views[n], n) for n in item_features])
        self._no_item_columns: tuple[dict[str, object], np.ndarray] | None = None

    def _plan(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str, bytes]]:
        plan = [(v, n, VIEW_FEATURES[v][n], self.layout.field(v, n)) for v, n in pairs]
        for v in dict.fromkeys(v for v, _ in pairs):
            plan.append((v, "_ts", "ts", self.layout.ts_field(v)))
        return plan

    # ------------------------------------------------------------------ reads
    def _read_commands(self, user_keys: list[bytes], item_keys: list[bytes], overlay_users: Sequence[int],
                       overlay_items: Sequence[int]) -> list[tuple]:
        """Feast rows (HMGET), then the real-time overlay of the given ids, as raw commands: one list for the
        sync pipeline and the asyncio batcher (redis-py parses each reply by its command name)."""
        ufields = [f for *_, f in self._user_fields]
        ifields = [f for *_, f in self._item_fields]
        commands: list[tuple] = [("HMGET", k, *ufields) for k in user_keys]
        commands += [("HMGET", k, *ifields) for k in item_keys]
        for u in overlay_users:
            commands += [("HGETALL", self.overlay.user(u)),
                         ("LRANGE", self.overlay.recent(u), 0, self.cfg.recent_items - 1),
                         ("GET", self.overlay.seen_batch(u)), ("GET", self.overlay.seen_live(u))]
        if overlay_items and self.cfg.is_cluster:  # item keys span slots: one HGETALL each (routed per node)
            commands += [("HGETALL", self.overlay.item(i)) for i in overlay_items]
        elif overlay_items:
            keys = [self.overlay.item(i) for i in overlay_items]
            commands.append(("EVAL", READ_ITEMS_SCRIPT, len(keys), *keys))
        return commands

    def _replies(self, out: list, overlay_items: Sequence[int]) -> list:
        # the item script's one reply -> one entry per item, like the other commands
        return [*out[:-1], *out[-1]] if overlay_items and not self.cfg.is_cluster else out

    def _unavailable(self, e: BaseException) -> FeatureStoreUnavailable:
        return FeatureStoreUnavailable(f"online store {self.cfg.redis_target} unavailable: {type(e).__name__}")

    def _hmget_all(self, user_keys: list[bytes], item_keys: list[bytes], overlay_users: Sequence[int] = (),
                   overlay_items: Sequence[int] = ()) -> list:
        """One pipelined round trip: Feast rows (HMGET), then the real-time overlay of the given ids."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for command in self._read_commands(user_keys, item_keys, overlay_users, overlay_items):
                    pipe.execute_command(*command)
                return self._replies(pipe.execute(), overlay_items)
        except self._redis_errors as e:
            raise self._unavailable(e) from e

    async def _ahmget_all(self, user_keys: list[bytes], item_keys: list[bytes], overlay_users: Sequence[int] = (),
                          overlay_items: Sequence[int] = ()) -> list:
        """:meth:`_hmget_all` with redis.asyncio on the caller's event loop (no thread hop); the reads of
        requests that reach this step in the same loop turn go out as one pipeline."""
        commands = self._read_commands(user_keys, item_keys, overlay_users, overlay_items)
        try:
            return self._replies(await self._abatched.execute_many(commands), overlay_items)
        except self._redis_errors as e:
            raise self._unavailable(e) from e

    def read_user_rows(self, user_ids: Sequence[int]) -> list[dict | None]:
        """Raw user feature dicts (None when the user has no online row), plus ``_ts`` per view."""
        rows = self._hmget_all([self.layout.key("user_id", u) for u in user_ids], [])
        return [self._user_dict(r) for r in rows]

    def read_item_columns(self, item_ids: Sequence[int]) -> tuple[dict[str, object], np.ndarray]:
        rows = self._hmget_all([], [self.layout.key("item_id", i) for i in item_ids])
        return self._item_columns(rows)

    def _user_dict(self, values: list) -> dict | None:
        out: dict = {}
        any_value = False
        for (view, name, kind, _), raw in zip(self._user_fields, values, strict=True):
            if kind == "ts":
                out[f"_ts:{view}"] = self._parse_ts(raw)
                continue
            if raw is None:
                out[name] = [] if kind.endswith("[]") else 0.0
                continue
            any_value = True
            p = self._Value()
            p.ParseFromString(raw)
            x = _value_to_python(p)
            out[name] = x if x is not None else ([] if kind.endswith("[]") else 0.0)
        return out if any_value else None

    @staticmethod
    def _parse_ts(raw) -> float:
        if not raw:
            return 0.0
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.ParseFromString(raw)
        return ts.seconds + ts.nanos / 1e9

    def _item_columns(self, rows: list) -> tuple[dict[str, object], np.ndarray]:
        if not rows:  # a user-only read (serving's history stage, every request): the same empty columns each time
            if self._no_item_columns is None:
                self._no_item_columns = self._decode_item_columns(rows)
            cols, missing = self._no_item_columns
            return {k: (list(v) if isinstance(v, list) else v) for k, v in cols.items()}, missing.copy()
        return self._decode_item_columns(rows)

    def _decode_item_columns(self, rows: list) -> tuple[dict[str, object], np.ndarray]:
        n = len(rows)
        present_any = np.zeros(n, dtype=bool)
        cols: dict[str, object] = {}
        for j, (_view, name, kind, _) in enumerate(self._item_fields):
            if kind == "ts":
                continue
            col, present = _decode_column([r[j] for r in rows], kind, self._Value)
            cols[name] = col
            present_any |= present
        return cols, ~present_any

    def fetch(self, user_id: int, item_ids: Sequence[int], at: float | None = None) -> OnlineFeatures:
        """Features of ``user_id`` and each of ``item_ids`` (one pipelined round trip).

        ``at`` (unix seconds, default now) is the request time used by the time-dependent features
        (recency, item age, hour/day-of-week affinity); tests pin it to compare with training rows.
        """
        t0 = time.perf_counter()
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows = self._hmget_all(*self._fetch_keys(user_id, item_ids))
        return self._features(rows, item_ids, at, t0)

    async def fetch_async(self, user_id: int, item_ids: Sequence[int] = (), at: float | None = None
                          ) -> OnlineFeatures:
        """:meth:`fetch` on the caller's event loop (redis.asyncio): the serving request path."""
        t0 = time.perf_counter()
        item_ids = np.asarray(item_ids, dtype=np.int64)
        rows = await self._ahmget_all(*self._fetch_keys(user_id, item_ids))
        return self._features(rows, item_ids, at, t0)

    def _fetch_keys(self, user_id: int, item_ids: np.ndarray) -> tuple:
        ids = item_ids.tolist()
        return ([self.layout.key("user_id", int(user_id))], [self.layout.key("item_id", i) for i in ids],
                [int(user_id)], ids)

    def _features(self, rows: list, item_ids: np.ndarray, at: float | None, t0: float) -> OnlineFeatures:
        n = len(item_ids)
        user = self._user_dict(rows[0])
        user_missing = user is None
        if user is None:
            user = self._user_dict([None] * len(self._user_fields)) or {
                n: ([] if k.endswith("[]") else 0.0) for _, n, k, _ in self._user_fields if k != "ts"}
        cols, missing = self._item_columns(rows[1:1 + n])
        u_hash, u_recent, seen_batch, seen_live = rows[1 + n:5 + n]
        if merge_user(user, u_hash, u_recent, self.cfg.recent_items):
            user_missing = False  # a user seen only through real-time events is not a cold start
        merge_items(cols, missing, rows[5 + n:])
        mat = (self._matrix(user, cols, item_ids, time.time() if at is None else at) if n
               else np.zeros((0, len(RANKER_FEATURES)), np.float32))  # a user-only read (serving's history)
        recent = [int(x) for x in user.get("user_recent_item_ids") or []]
        live = unpack_seen(seen_live)
        seen = np.concatenate([unpack_seen(seen_batch), live])
        k = self.cfg.history_items
        history = (recent_distinct(seen, k, tail=k + len(live)) if len(seen)
                   else list(dict.fromkeys(recent))[:k])  # no seen set (seen_items = 0, not materialized)
        return OnlineFeatures(
            user=user, items=mat, missing=missing, recent_item_ids=recent, seen_item_ids=seen,
            history_item_ids=history,
            user_missing=user_missing, item_raw={k: v for k, v in cols.items() if k not in RANKER_FEATURES},
            fetch_ms=(time.perf_counter() - t0) * 1000,
        )

    @staticmethod
    def _matrix(user: dict, cols: dict, item_ids: np.ndarray, at: float) -> np.ndarray:
        n = len(item_ids)
        raw: dict[str, np.ndarray] = {}
        for name, value in user.items():
            if name.startswith("_ts:"):
                continue
            if isinstance(value, list):
                fill, dtype = (-1, np.int64) if name == "user_recent_item_ids" else (0, np.float32)
                width = _FIXED_WIDTHS.get(name, max(len(value), 1))
                raw[name] = pad_lists([value], width, fill=fill, dtype=dtype)
            else:
                raw[name] = np.asarray([value], dtype=np.float64)
        for name, col in cols.items():
            if isinstance(col, list):
                width = max((len(x) for x in col if x), default=1)
                raw[name] = pad_lists(col, width)
            else:
                raw[name] = col
        if "item_genre_multihot" not in raw:
            raw["item_genre_multihot"] = np.zeros((n, 1), np.float32)
        return ranker_matrix(raw, item_ids, np.float64(at))

    def materialization_version(self) -> int:
        """The project's materialization counter (0 before the first marked materialization)."""
        try:
            return int(self.redis.get(materialization_key(self.cfg.project)) or 0)
        except self._redis_errors as e:
            raise self._unavailable(e) from e

    def touched_items_since(self, since_ms: int | None, limit: int | None = None) -> tuple[list[int], int]:
        """(items whose real-time overlay changed at or after Redis server time ``since_ms`` (milliseconds),
        the next cursor); ``since_ms=None`` only reads the server time (a reader's first cursor).

        Pass the returned cursor as the next ``since_ms``: it is the server's time now or, when ``limit``
        cut the answer short, the time of the last item returned, so the rest come next call. Reading
        from that millisecond on again re-reads a few items twice but never misses one (an apply batch
        stamps all its items with one time, far fewer than any sane ``limit``).
        """
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.time()
                if since_ms is not None:
                    pipe.zrangebyscore(self.overlay.touched, int(since_ms), "+inf", withscores=True,
                                       **({"start": 0, "num": int(limit)} if limit else {}))
                (secs, micros), *found = pipe.execute()
        except self._redis_errors as e:
            raise self._unavailable(e) from e
        pairs = found[0] if found else []
        cursor = int(secs) * 1000 + int(micros) // 1000
        if limit and len(pairs) >= limit:
            cursor = max(int(pairs[-1][1]), int(since_ms) + 1)  # never stuck on one millisecond
        return [int(i) for i, _ in pairs], cursor

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except self._redis_errors as e:
            raise FeatureStoreUnavailable(f"online store {self.cfg.redis_target} unavailable: "
                                          f"{type(e).__name__}") from e

    def close(self) -> None:
        self.redis.close()

    async def aclose(self) -> None:
        """Both clients (a replaced serving replica must not keep its sockets)."""
        self.close()
        await self._aredis.aclose()


def delete_project_keys(cfg: FeatureStoreConfig) -> int:
    """Remove every online key of ``cfg.project`` (Feast keys end with the project name; the event
    stream and real-time overlay live under ``recsys:rt:{project}:``).

    For tests and benchmarks that share a Redis db: no FLUSHDB, only this project's rows.
    """
    from recsys.features.redis_clients import sync_client

    r = sync_client(cfg, cfg.batch_timeout_s)
    suffix = cfg.project.encode()
    keys = [k for k in r.scan_iter(count=1000) if k.endswith(suffix)]
    keys += list(r.scan_iter(match=f"{OverlayKeys(cfg.project).prefix}:*", count=1000))  # stream + overlay
    for i in range(0, len(keys), 500):
        if cfg.is_cluster:  # a multi-key DEL must stay in one slot: one per key, pipelined
            with r.pipeline(transaction=False) as pipe:
                for k in keys[i:i + 500]:
                    pipe.delete(k)
                pipe.execute()
        else:
            r.delete(*keys[i:i + 500])
    return len(keys)
