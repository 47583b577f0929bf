"""Redis clients of the feature store (one node or a Redis Cluster, from ``FeatureStoreConfig.redis_url``).

A ``redis+cluster://host:port`` URL gives :class:`redis.cluster.RedisCluster` clients (see
:mod:`recsys.platform.redis_connect`); everything else ``redis.Redis``. Both fail fast (no retries).
"""

from __future__ import annotations

from recsys.features.config import FeatureStoreConfig
from recsys.platform.redis_async import LoopBoundRedis
from recsys.platform.redis_connect import is_cluster_url, redis_from_url


def _url_kwargs(cfg: FeatureStoreConfig, timeout_s: float) -> dict:
    return {"socket_timeout": timeout_s, "socket_connect_timeout": cfg.connect_timeout_s}


def sync_client(cfg: FeatureStoreConfig, timeout_s: float | None = None):
    """A blocking client with ``timeout_s`` as socket timeout (default: ``read_timeout_s``)."""
    timeout = cfg.read_timeout_s if timeout_s is None else timeout_s
    if is_cluster_url(cfg.redis_url):
        return redis_from_url(cfg.redis_url, **_url_kwargs(cfg, timeout))
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(**cfg.redis_kwargs(socket_timeout=timeout), retry=Retry(NoBackoff(), 0),
                       health_check_interval=0)


def async_client(cfg: FeatureStoreConfig, timeout_s: float | None = None) -> LoopBoundRedis:
    """One ``redis.asyncio`` client per event loop (``.get()``)."""
    timeout = cfg.read_timeout_s if timeout_s is None else timeout_s
    if is_cluster_url(cfg.redis_url):
        return LoopBoundRedis(cfg.redis_url, **_url_kwargs(cfg, timeout))
    return LoopBoundRedis(**cfg.redis_kwargs(socket_timeout=timeout))
