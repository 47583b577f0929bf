"""One way to open a Redis client from a URL, for one node or a Redis Cluster.

A cluster is named by the scheme ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS): any
node of the cluster as the seed; redis-py's :class:`redis.cluster.RedisCluster` discovers the rest and
routes each command (and each script, by its KEYS) to the node owning the slot. A cluster has only db
0. Every client here fails fast: no redis-py retries or health-check PINGs (callers retry with their
own back-off, and a dead Redis must surface within the socket timeout).
"""

from __future__ import annotations

from typing import Any

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0] in CLUSTER_SCHEMES


def plain_url(url: str) -> str:
    """The URL redis-py understands (``redis+cluster://`` -> ``redis://``)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.replace('+cluster', '')}://{rest}"


def _no_retry() -> dict[str, Any]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"retry": Retry(NoBackoff(), 0)}


def redis_from_url(url: str, **kwargs: Any):
    """``redis.Redis`` or ``redis.cluster.RedisCluster`` for ``url`` (kwargs: socket timeouts etc.)."""
    import redis
    from redis.cluster import RedisCluster

    if is_cluster_url(url):
        kwargs.pop("db", None)
        kwargs.pop("health_check_interval", None)
        return RedisCluster.from_url(plain_url(url), **{**_no_retry(), **kwargs})
    return redis.Redis.from_url(url, **{**_no_retry(), "health_check_interval": 0, **kwargs})


def async_redis_from_url(url: str, **kwargs: Any):
    """The ``redis.asyncio`` twin of :func:`redis_from_url` (bind it to one event loop)."""
    import redis.asyncio as aredis
    from redis.asyncio.cluster import RedisCluster

    if is_cluster_url(url):
        kwargs.pop("db", None)
        kwargs.pop("health_check_interval", None)
        return RedisCluster.from_url(plain_url(url), **{**_no_retry(), **kwargs})
    return aredis.Redis.from_url(url, **{**_no_retry(), "health_check_interval": 0, **kwargs})
