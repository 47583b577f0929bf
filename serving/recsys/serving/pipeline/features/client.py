"""Adapter between serving and ``recsys.features`` for online feature reads.

Serving needs ``OnlineFeatureClient``, ``EventValidationError`` and ``FeatureStoreUnavailable`` from the
features component (docs/contracts.md); they are looked up here, once, so the rest of serving sees one small
interface (:class:`FeatureGateway`) that keeps working, degraded and saying so, when the store is down:

* ``OnlineFeatureClient`` importable: real online reads (one pipelined Redis round trip over the Feast
  online layout; users/items without rows read as zeros + a missing mask).
* otherwise: :class:`RedisOnlyFeatures`, which only checks Redis is reachable, so an outage is still
  reported as ``feature_store_unavailable``. (Event ingestion lives in :mod:`recsys.serving.http.events`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.serving.config import ServingConfig

log = logging.getLogger(__name__)

_FEATURE_MODULES = ("recsys.features", "recsys.features.online", "recsys.features.serving",
                    "recsys.features.ingest", "recsys.features.events", "recsys.features.errors")


def _find(name: str) -> Any | None:
    """``name`` from the first features module that defines it; None when none does.

    Only "not there" is tolerated (the module or the attribute is missing); a features module that
    fails to import for any other reason is a bug and must fail the deployment, not hide as "no features".
    """
    for module in _FEATURE_MODULES:
        try:
            return getattr(importlib.import_module(module), name)
        except (ModuleNotFoundError, AttributeError):
            continue
    return None


class _LocalFeatureStoreUnavailable(RuntimeError):
    """Stand-in used only while recsys.features does not define FeatureStoreUnavailable."""


FeatureStoreUnavailable: type[Exception] = _find("FeatureStoreUnavailable") or _LocalFeatureStoreUnavailable
EventValidationError: type[Exception] | None = _find("EventValidationError")


class FeatureReadError(RuntimeError):
    """The online store returned data the client cannot decode (bad bytes in Redis): degrade, log.

    Only data errors become this; a bug in the client (TypeError, KeyError, ...) propagates and is a
    500, so tests see it instead of counting a degraded answer as a success.
    """


def _dependency_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the online store is down or slow": the request degrades to no features."""
    import redis

    return (ConnectionError, TimeoutError, OSError, redis.RedisError)


def _data_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "the stored bytes are not what the schema says": degrade, log, alert."""
    errors: list[type[BaseException]] = [UnicodeDecodeError]
    try:
        from google.protobuf.message import DecodeError

        errors.append(DecodeError)
    except ModuleNotFoundError:  # protobuf comes with Feast; without it there is nothing to decode
        pass
    return tuple(errors)


@dataclass
class HydratedFeatures:
    """What one batched online read gives the ranker."""

    names: list[str]
    items: np.ndarray | None  # float32 [n_candidates, len(names)], None when not fetched
    user: dict[str, Any] = field(default_factory=dict)
    recent_item_ids: list[int] = field(default_factory=list)
    raw_user: dict[str, Any] | None = None  # the online client's user row, to combine with cached item columns
    user_id: int | None = None
    seen_item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # already-seen filter


class RedisOnlyFeatures:
    """Fallback client: no feature repo, but Redis reachability is still checked (degraded flag)."""

    def __init__(self, redis_url: str, timeout_s: float):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # no retries: redis-py's default (3 tries, 1-10 s backoff) stalls every request during an outage
        self._redis = redis.Redis.from_url(
            redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )

    def fetch(self, user_id: int, item_ids: Sequence[int]) -> HydratedFeatures:
        import redis

        try:
            self._redis.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise FeatureStoreUnavailable(f"redis unreachable: {e}") from e
        return HydratedFeatures(names=[], items=None)

    async def aclose(self) -> None:
        self._redis.close()


class FeatureGateway:
    """One place serving talks to the feature store; every failure becomes FeatureStoreUnavailable."""

    def __init__(self, cfg: ServingConfig):
        self.cfg = cfg
        self.names: list[str] = list(_find("RANKER_FEATURES") or [])
        self._client: Any = None
        self._store_cfg: Any = None
        client_cls, cfg_cls = _find("OnlineFeatureClient"), _find("FeatureStoreConfig")
        if cfg_cls is not None:
            try:
                kwargs: dict[str, Any] = {"redis_url": cfg.redis_url, "connect_timeout_s": cfg.feature_timeout_s,
                                          "read_timeout_s": cfg.feature_timeout_s, "project": cfg.feature_project,
                                          **cfg.online_state.store_kwargs()}
                if cfg.feature_repo_dir is not None:
                    kwargs["repo_dir"] = cfg.feature_repo_dir
                self._store_cfg = cfg_cls(**kwargs)
            except ValueError as e:  # pydantic's ValidationError: a bad value in the deployment's config
                log.warning("feature store config rejected (%s); serving without features", e)
        if client_cls is not None and self._store_cfg is not None:
            try:
                self._client = client_cls(self._store_cfg)
                self.mode = "online"
            except (FeatureStoreUnavailable, *_dependency_errors()) as e:  # store down at start: still detect it
                log.warning("OnlineFeatureClient unavailable (%s); serving without features", e)
        if self._client is None:
            self._client = RedisOnlyFeatures(cfg.redis_url, cfg.feature_timeout_s)
            self.mode = "redis-only"

    @property
    def store_config(self) -> Any:
        """The ``FeatureStoreConfig`` read with (None: none usable); the event pipeline writes with it too."""
        return self._store_cfg

    async def aclose(self) -> None:
        """Close the client's Redis connections (a replaced service must not keep its sockets)."""
        await self._client.aclose()

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run one client read; outages -> FeatureStoreUnavailable, anything else -> FeatureReadError."""
        with self._read_errors():
            return fn(*args)

    @contextlib.contextmanager
    def _read_errors(self) -> Iterator[None]:
        try:
            yield
        except FeatureStoreUnavailable:
            raise
        except _dependency_errors() as e:
            raise FeatureStoreUnavailable(f"online feature read failed: {e}") from e
        except _data_errors() as e:
            log.warning("online features could not be decoded: %r", e)
            raise FeatureReadError(f"online feature read failed: {e!r}") from e

    def enable_item_cache(self, lookup_rows: Any, n_rows: int) -> bool:
        """Cache decoded item features by catalog row (``item_feature_cache_s``); needs the online client."""
        client = self._client
        if (self.cfg.item_feature_cache_s <= 0 or n_rows <= 0 or not hasattr(client, "read_item_columns")
                or not hasattr(type(client), "_matrix")):
            return False
        from recsys.serving.pipeline.features.item_cache import ItemFeatureCache

        self.item_cache = ItemFeatureCache(lookup_rows, n_rows, self.cfg.item_feature_cache_s)
        return True

    item_cache: Any = None
    clock: Callable[[], float] = staticmethod(time.time)
    """The request time of the time-dependent features (recency, windows); the evaluator-parity test pins
    it to the evaluation instant."""

    def fetch_user(self, user_id: int) -> HydratedFeatures:
        """The user's row only (one Redis round trip); pass it to :meth:`items_from_cache` / :meth:`fetch_items`."""
        return self._convert(self._call(self._client.fetch, int(user_id), []), int(user_id))

    async def fetch_user_async(self, user_id: int) -> HydratedFeatures:
        """:meth:`fetch_user` on the request's event loop when the client can (redis.asyncio), else in a thread."""
        fetch = getattr(self._client, "fetch_async", None)
        if fetch is None:
            return await asyncio.to_thread(self.fetch_user, user_id)
        with self._read_errors():
            res = await fetch(int(user_id), [])
        return self._convert(res, int(user_id))

    def items_from_cache(self, user: HydratedFeatures | None,
                         item_ids: np.ndarray) -> tuple[HydratedFeatures | None, np.ndarray]:
        """(features of ``item_ids`` without any I/O, ids to refresh in the background).

        None when an item was never cached (the caller reads it with :meth:`fetch_items`). Entries
        older than ``item_feature_cache_s`` are served as they are and returned for a refresh.
        """
        cache = self.item_cache
        no_refresh = np.zeros(0, np.int64)
        if cache is None or user is None or user.raw_user is None:
            return None, no_refresh
        now = time.time()
        rows, missing, old = cache.status(item_ids, now)
        if missing.any():
            return None, no_refresh
        cached = np.zeros(len(rows), bool)
        return self._combine(user, item_ids, cache.assemble(rows, cached, {})), item_ids[old]

    def _read_item_columns(self, item_ids: list[int]) -> tuple[dict[str, Any], np.ndarray]:
        """Item columns as ``fetch`` sees them: Feast rows plus the real-time overlay when the client has one."""
        c = self._client
        merge = _find("merge_items")
        if merge is None or not hasattr(c, "overlay") or not hasattr(c, "_hmget_all"):
            return c.read_item_columns(item_ids)
        n = len(item_ids)
        rows = c._hmget_all([], [c.layout.key("item_id", int(i)) for i in item_ids], overlay_items=item_ids)
        cols, missing = c._item_columns(rows[:n])
        merge(cols, missing, rows[n:])
        return cols, missing

    def materialization_version(self) -> int | None:
        """The feature project's materialization counter; None when the client cannot tell (blocking)."""
        read = getattr(self._client, "materialization_version", None)
        return None if read is None else int(self._call(read))

    def touched_items_since(self, since_ms: int | None, limit: int | None = None) -> tuple[list[int], int] | None:
        """``OnlineFeatureClient.touched_items_since``; None when the client cannot tell (blocking)."""
        read = getattr(self._client, "touched_items_since", None)
        return None if read is None else self._call(read, since_ms, limit)

    def refresh_items(self, item_ids: np.ndarray) -> None:
        """Re-read items into the cache (blocking; the hydration stage runs it in the background)."""
        cache = self.item_cache
        if cache is None or len(item_ids) == 0:
            return
        now = time.time()
        rows = cache.lookup_rows(np.asarray(item_ids, np.int64))
        fresh, _missing = self._call(self._read_item_columns, np.asarray(item_ids, np.int64).tolist())
        cache.put(rows, fresh, now)

    def fetch_items(self, user_id: int, user: HydratedFeatures | None, item_ids: np.ndarray) -> HydratedFeatures:
        """Features of ``item_ids`` for an already read user: Redis only for uncached/stale items (blocking).

        Without a usable user row or item cache this is the plain one-round-trip :meth:`fetch`.
        """
        cache = self.item_cache
        if cache is None or user is None or user.raw_user is None:
            return self.fetch(user_id, item_ids)
        now = time.time()
        rows, need = cache.stale(item_ids, now)
        fresh: dict[str, Any] = {}
        if need.any():
            fresh, _missing = self._call(self._read_item_columns, item_ids[need].tolist())
            cache.put(rows[need], fresh, now)
        return self._combine(user, item_ids, cache.assemble(rows, need, fresh))

    def _combine(self, user: HydratedFeatures, item_ids: np.ndarray, cols: dict[str, np.ndarray]) -> HydratedFeatures:
        """The ranker rows of cached item columns + the user's row, as of :attr:`clock` (the request time)."""
        mat = self._call(type(self._client)._matrix, user.raw_user, cols, np.asarray(item_ids, np.int64),
                         self.clock())
        return HydratedFeatures(names=user.names, items=np.asarray(mat, np.float32), user=user.user,
                                recent_item_ids=user.recent_item_ids, user_id=user.user_id,
                                seen_item_ids=user.seen_item_ids)

    def fetch(self, user_id: int, item_ids: Sequence[int]) -> HydratedFeatures:
        ids = np.asarray(item_ids, np.int64).tolist()
        return self._convert(self._call(self._client.fetch, int(user_id), ids), int(user_id))

    def _convert(self, res: Any, user_id: int | None = None) -> HydratedFeatures:
        if isinstance(res, HydratedFeatures):
            return res
        items = getattr(res, "items", None)
        user = getattr(res, "user", None)
        seen = getattr(res, "seen_item_ids", None)
        return HydratedFeatures(
            names=list(getattr(res, "feature_names", None) or self.names),
            items=None if items is None else np.asarray(items, np.float32),
            user=dict(user or {}),
            # the distinct history when the client has one (training's order), else the recent events
            recent_item_ids=[int(x) for x in (getattr(res, "history_item_ids", None)
                                              or getattr(res, "recent_item_ids", None) or [])],
            raw_user=user if isinstance(user, dict) else None,
            user_id=user_id,
            seen_item_ids=np.zeros(0, np.int64) if seen is None else np.asarray(seen, np.int64),
        )
