"""Redis result cache for recommendations, invalidated by the user's own events.

Key layout (one Redis round trip per lookup, one per store, one per invalidation)::

    {prefix}:gen:{u:<user>}                      -> int, INCR'd by every event of the user (POST /v1/events)
    {prefix}:res:{u:<user>}:{variant}:{shape_hash} -> JSON {"g": generation at compute start, "r": response}

A lookup is ``MGET gen-key result-key``; an entry whose stored generation differs from the
current one is a miss. So an event invalidates every cached answer of that user with a single
``INCR`` (no key scans), and an answer computed while an event was arriving is stored under the
old generation and therefore never served. The generation key outlives every result entry
(``generation_ttl_s`` > ``ttl_s``), so its expiry cannot resurrect a stale answer.

The cache is an optimisation, never a dependency: every Redis error or timeout counts as a miss
(and a cache error), never marks the response degraded, and opens a short circuit breaker so a
dead Redis costs one failed call per ``breaker_s`` instead of one per request. A refused connection
opens the breaker at once; timeouts only after ``breaker_timeouts`` in a row, because on a
CPU-saturated ingress a single slow reply is load, not an outage (and every open breaker window
also skips the writes, leaving the cache cold afterwards).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.features.keys import cache_generation_key, cache_result_key
from recsys.platform.redis_async import LoopBatchedRedis, LoopBoundRedis
from recsys.platform.redis_connect import redis_from_url

log = logging.getLogger(__name__)


class CacheConfig(BaseModel):
    """Result-cache knobs (``ServingConfig.cache``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Cache recommendation responses in Redis")
    redis_url: str | None = Field(None, description="Cache Redis; None = the feature store's redis_url")
    ttl_s: float = Field(60.0, gt=0, le=86_400, description="Lifetime of one cached response")
    generation_ttl_s: float = Field(7 * 86_400, gt=0, description="Lifetime of a user's invalidation counter")
    socket_timeout_s: float = Field(0.25, gt=0, le=5, description="Connect/read timeout of one cache call")
    breaker_s: float = Field(2.0, ge=0, le=600, description="Skip the cache this long once Redis looks down")
    breaker_timeouts: int = Field(3, ge=1, le=1000,
                                  description="Consecutive timeouts that open the breaker (refusals open it at once)")
    key_prefix: str = Field("recsys:rc", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9:_.-]+$")
    max_entry_bytes: int = Field(256_000, ge=1024, description="Larger responses are not cached")

    @model_validator(mode="after")
    def _generation_outlives_results(self) -> CacheConfig:
        if self.generation_ttl_s <= self.ttl_s:
            raise ValueError("generation_ttl_s must be > ttl_s (else an expired counter could revive stale entries)")
        return self


def request_shape_hash(shape: dict[str, Any]) -> str:
    """Stable short hash of everything in a request except the user (n, filters, exclude, context, ...)."""
    blob = json.dumps(shape, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class CacheLookup:
    """Result of :meth:`ResultCache.get`: the cached payload (or None) and the generation to store under."""

    payload: dict[str, Any] | None
    generation: int
    error: bool = False
    propensities: list[float] | None = None  # the original decision's, logged again with every replay
    decision_id: str | None = None  # the exposure id of the decision whose answer this is

    @property
    def hit(self) -> bool:
        return self.payload is not None


_DISABLED = CacheLookup(None, 0, error=False)


class ResultCache:
    """``aget``/``aput`` for the request path (redis.asyncio, no thread hop); blocking ``get``/``put``/
    ``invalidate_user`` for threads and tools. The breaker state is shared and thread-safe."""

    def __init__(self, cfg: CacheConfig, default_redis_url: str):
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.cfg = cfg
        self.enabled = cfg.enabled
        # retry=Retry(NoBackoff(), 0): redis-py 7 otherwise retries 3x with 1-10 s exponential
        # backoff on connection errors, turning a Redis outage into multi-second request stalls.
        # redis_from_url: a RedisCluster for a redis+cluster:// URL (gen and result keys share the user's slot)
        self._redis = redis_from_url(
            cfg.redis_url or default_redis_url,
            socket_connect_timeout=cfg.socket_timeout_s,
            socket_timeout=cfg.socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._aredis = LoopBoundRedis(cfg.redis_url or default_redis_url, socket_connect_timeout=cfg.socket_timeout_s,
                                      socket_timeout=cfg.socket_timeout_s)
        # the request path's reads and writes: concurrent requests' commands share one pipeline per loop turn
        self._batched = LoopBatchedRedis(self._aredis)
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._timeouts_in_a_row = 0

    # ------------------------------------------------------------------ keys
    def _gen_key(self, user_id: int) -> str:
        return cache_generation_key(self.cfg.key_prefix, user_id)  # the event consumer's script bumps this key

    def _res_key(self, user_id: int, variant: str, shape_hash: str) -> str:
        return cache_result_key(self.cfg.key_prefix, user_id, variant, shape_hash)

    # ------------------------------------------------------------------ breaker
    def _available(self) -> bool:
        return self.enabled and time.monotonic() >= self._open_until

    def _ok(self) -> None:
        self._timeouts_in_a_row = 0

    def _failed(self, op: str, e: Exception) -> None:
        import redis

        with self._lock:
            if isinstance(e, redis.TimeoutError | TimeoutError):
                self._timeouts_in_a_row += 1
                if self._timeouts_in_a_row < self.cfg.breaker_timeouts:
                    return
            self._timeouts_in_a_row = 0
            first = time.monotonic() >= self._open_until
            self._open_until = time.monotonic() + self.cfg.breaker_s
        if first:  # one line per outage window, not one per request
            log.warning("result cache %s failed, bypassing cache for %.1fs: %s", op, self.cfg.breaker_s,
                        type(e).__name__)

    # ------------------------------------------------------------------ operations
    def get(self, user_id: int, variant: str, shape_hash: str) -> CacheLookup:
        """Cached response for this (user, variant, shape) if still current; errors -> miss (blocking)."""
        if not self._available():
            return _DISABLED
        try:
            gen_raw, blob = self._redis.mget(self._gen_key(user_id), self._res_key(user_id, variant, shape_hash))
        except Exception as e:  # noqa: BLE001 - any cache failure is a miss, never a request failure
            self._failed("get", e)
            return CacheLookup(None, 0, error=True)
        return self._lookup(gen_raw, blob)

    async def aget(self, user_id: int, variant: str, shape_hash: str) -> CacheLookup:
        """:meth:`get` on the request's event loop (no thread hop)."""
        if not self._available():
            return _DISABLED
        try:
            gen_raw, blob = await self._batched.execute("MGET", self._gen_key(user_id),
                                                        self._res_key(user_id, variant, shape_hash))
        except Exception as e:  # noqa: BLE001 - any cache failure is a miss, never a request failure
            self._failed("get", e)
            return CacheLookup(None, 0, error=True)
        return self._lookup(gen_raw, blob)

    def _lookup(self, gen_raw: bytes | None, blob: bytes | None) -> CacheLookup:
        self._ok()
        generation = int(gen_raw or 0)
        if blob is None:
            return CacheLookup(None, generation)
        try:
            entry = json.loads(blob)
        except ValueError:
            return CacheLookup(None, generation)
        if not isinstance(entry, dict) or entry.get("g") != generation or not isinstance(entry.get("r"), dict):
            return CacheLookup(None, generation)
        props, decision = entry.get("p"), entry.get("d")
        props = [float(p) for p in props] if isinstance(props, list) else None
        return CacheLookup(entry["r"], generation, propensities=props,
                           decision_id=decision if isinstance(decision, str) else None)

    def _entry(self, generation: int, payload: dict[str, Any] | str, propensities: list[float] | None = None,
               decision_id: str | None = None) -> str | None:
        """The stored JSON; ``payload`` may come already serialized (pydantic's ``model_dump_json``).

        ``propensities`` and ``decision_id`` (the original decision's) travel with the answer so that a
        replay is logged with the propensities it was chosen with (off-policy evaluation, issue 23).
        """
        meta = ""
        if propensities is not None:
            meta += ',"p":' + json.dumps([float(p) for p in propensities])  # repr floats: unrounded
        if decision_id is not None:
            meta += ',"d":' + json.dumps(str(decision_id))
        if isinstance(payload, str):
            blob = f'{{"g":{int(generation)},"r":{payload}{meta}}}'
        else:
            blob = json.dumps({"g": int(generation), "r": payload}, separators=(",", ":"))[:-1] + meta + "}"
        return blob if len(blob) <= self.cfg.max_entry_bytes else None

    def put(self, user_id: int, variant: str, shape_hash: str, generation: int, payload: dict[str, Any],
            propensities: list[float] | None = None, decision_id: str | None = None) -> bool:
        """Store ``payload`` under the generation read before computing it; False if skipped/failed (blocking)."""
        if not self._available():
            return False
        blob = self._entry(generation, payload, propensities, decision_id)
        if blob is None:
            return False
        try:
            self._redis.set(self._res_key(user_id, variant, shape_hash), blob, px=int(self.cfg.ttl_s * 1000))
        except Exception as e:  # noqa: BLE001
            self._failed("put", e)
            return False
        return True

    async def aput(self, user_id: int, variant: str, shape_hash: str, generation: int,
                   payload: dict[str, Any] | str, propensities: list[float] | None = None,
                   decision_id: str | None = None) -> bool:
        """:meth:`put` on the request's event loop (no thread hop)."""
        if not self._available():
            return False
        blob = self._entry(generation, payload, propensities, decision_id)
        if blob is None:
            return False
        try:
            await self._batched.execute("SET", self._res_key(user_id, variant, shape_hash), blob, "PX",
                                        int(self.cfg.ttl_s * 1000))
        except Exception as e:  # noqa: BLE001
            self._failed("put", e)
            return False
        return True

    def invalidate_user(self, user_id: int) -> bool:
        """A new event of ``user_id``: every cached answer of the user becomes stale (one INCR)."""
        if not self.enabled:
            return False
        # Not gated by the breaker: a missed invalidation would serve stale results once Redis is
        # back, so always try (bounded by the socket timeout).
        key = self._gen_key(user_id)
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, int(self.cfg.generation_ttl_s))
            pipe.execute()
        except Exception as e:  # noqa: BLE001
            self._failed("invalidate", e)
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._redis.close()

    async def aclose(self) -> None:
        self.close()
        await self._aredis.aclose()
