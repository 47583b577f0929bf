"""Adapter between serving and ``recsys.features`` (online features, event ingestion).

Serving depends on three things from the features component (docs/contracts.md):
``OnlineFeatureClient.fetch``, ``ingest_event`` and the ``FeatureStoreUnavailable`` error. They are
looked up here, once, so the rest of serving sees one small interface (:class:`FeatureGateway`)
and keeps working — degraded, and saying so — when the online store is down or not configured:

* ``recsys.features.OnlineFeatureClient`` importable: real online reads (one pipelined Redis round
  trip over the Feast online layout; users/items without rows read as zeros + a missing mask).
* otherwise: :class:`RedisOnlyFeatures`, which only checks Redis is reachable (no features, no
  history), so an outage is still detected and reported as ``feature_store_unavailable``.

Event ingestion (``POST /v1/events``) needs the Feast repo (``feature_repo_dir``): without it the
endpoint validates the event and answers 503 "not configured" rather than writing an event log to
some default directory.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.serving.config import ServingConfig

log = logging.getLogger(__name__)

_FEATURE_MODULES = ("recsys.features", "recsys.features.online", "recsys.features.serving",
                    "recsys.features.ingest", "recsys.features.events", "recsys.features.errors")


def _find(name: str) -> Any | None:
    for module in _FEATURE_MODULES:
        try:
            return getattr(importlib.import_module(module), name)
        except Exception:  # noqa: BLE001 - a missing or half-built features package must not break serving
            continue
    return None


class _LocalFeatureStoreUnavailable(RuntimeError):
    """Stand-in used only while recsys.features does not define FeatureStoreUnavailable."""


FeatureStoreUnavailable: type[Exception] = _find("FeatureStoreUnavailable") or _LocalFeatureStoreUnavailable
EventValidationError: type[Exception] | None = _find("EventValidationError")


class FeatureReadError(RuntimeError):
    """The online client failed for a reason other than an outage (a bug, bad data): degrade, log."""


class EventIngestionUnavailable(RuntimeError):
    """recsys.features.ingest_event is not installed/configured: /v1/events answers 503."""


@dataclass
class HydratedFeatures:
    """What one batched online read gives the ranker."""

    names: list[str]
    items: np.ndarray | None  # float32 [n_candidates, len(names)], None when not fetched
    user: dict[str, Any] = field(default_factory=dict)
    recent_item_ids: list[int] = field(default_factory=list)


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
                                          "read_timeout_s": cfg.feature_timeout_s, "project": cfg.feature_project}
                if cfg.feature_repo_dir is not None:
                    kwargs["repo_dir"] = cfg.feature_repo_dir
                self._store_cfg = cfg_cls(**kwargs)
            except Exception as e:  # noqa: BLE001
                log.warning("feature store config rejected (%s); serving without features", e)
        if client_cls is not None and self._store_cfg is not None:
            try:
                self._client = client_cls(self._store_cfg)
                self.mode = "online"
            except Exception as e:  # noqa: BLE001 - fall back, still detect outages
                log.warning("OnlineFeatureClient unavailable (%s); serving without features", e)
        if self._client is None:
            self._client = RedisOnlyFeatures(cfg.redis_url, cfg.feature_timeout_s)
            self.mode = "redis-only"

    def fetch(self, user_id: int, item_ids: Sequence[int]) -> HydratedFeatures:
        try:
            res = self._client.fetch(int(user_id), [int(i) for i in item_ids])
        except FeatureStoreUnavailable:
            raise
        except (ConnectionError, TimeoutError, OSError) as e:
            raise FeatureStoreUnavailable(f"online feature read failed: {e}") from e
        except Exception as e:  # noqa: BLE001 - never let a client bug fail the request
            log.warning("online feature read failed: %r", e)
            raise FeatureReadError(f"online feature read failed: {e!r}") from e
        if isinstance(res, HydratedFeatures):
            return res
        items = getattr(res, "items", None)
        return HydratedFeatures(
            names=list(getattr(res, "feature_names", None) or self.names),
            items=None if items is None else np.asarray(items, np.float32),
            user=dict(getattr(res, "user", {}) or {}),
            recent_item_ids=[int(x) for x in (getattr(res, "recent_item_ids", None) or [])],
        )

    def ingest(self, event: dict[str, Any]) -> Any:
        fn = _find("ingest_event")
        if fn is None or self._store_cfg is None or self.cfg.feature_repo_dir is None:
            raise EventIngestionUnavailable(
                "event ingestion is not configured (needs recsys.features.ingest_event and feature_repo_dir)"
            )
        try:
            return fn(self._store_cfg, event)
        except FeatureStoreUnavailable:
            raise
        except Exception as e:
            if EventValidationError is not None and isinstance(e, EventValidationError):
                raise
            if isinstance(e, ConnectionError | TimeoutError | OSError):
                raise FeatureStoreUnavailable(str(e)) from e
            raise
