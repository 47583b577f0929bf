"""Settings of the feature store: where the Feast repo lives and which Redis serves online reads.

One pydantic object passed down explicitly (no environment reads on import).  The Redis URL is
the one users write (``redis://host:port/db``); Feast wants its own connection-string format
(``host:port,db=15,socket_timeout=0.5``), produced by :meth:`FeatureStoreConfig.feast_connection_string`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recsys.platform.data.history import HISTORY_LENGTH


class FeatureStoreConfig(BaseModel):
    """Where the Feast repo, offline parquet, registry and event log live, and how to reach Redis."""

    model_config = ConfigDict(extra="forbid")

    repo_dir: Path = Field(Path("var/features"), description="feature_store.yaml, registry and offline parquet")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Online store, redis://[:password@]host:port/db")
    project: str = Field("recsys", description="Feast project name (prefix of every online key)")
    event_log_path: Path | None = Field(None, description="JSON-lines event log (default repo_dir/events.jsonl)")
    connect_timeout_s: float = Field(0.3, gt=0, description="Redis connect timeout for online reads and pushes")
    read_timeout_s: float = Field(0.5, gt=0, description="Redis socket timeout for online reads and pushes")
    batch_timeout_s: float = Field(30.0, gt=0, description="Redis socket timeout while materializing")
    recent_items: int = Field(20, ge=1, le=200, description="Length of user_recent_item_ids (the ranker's event list)")
    history_items: int = Field(
        HISTORY_LENGTH, ge=1, le=200,
        description="Length of the distinct history serving feeds the models: HISTORY_LENGTH, the length the "
                    "two-tower and SASRec train on (recsys.platform.data.history)")
    seen_items: int = Field(
        5000, ge=0, le=100_000,
        description="Newest items per user kept online for serving's already-seen filter (0 = none; "
                    "recsys.features.seen)")
    max_clock_skew_s: float = Field(300.0, ge=0, description="How far in the future an event timestamp may be")
    max_entity_id: int = Field(
        2**53 - 1, ge=1, le=2**63 - 1,
        description="Largest user/item id an event may carry (ids are >= 0); larger ids are rejected with 422. "
                    "2**53 - 1 by default: the largest integer every JSON client reads back exactly")
    online_user_ttl_s: int = Field(
        31 * 86400, ge=0,
        description="Real-time state of a user (overlay counters, recent items, live seen set) expires this long "
                    "after the user's last event (0 = never): a user who returns later is cold again")
    online_item_ttl_s: int = Field(31 * 86400, ge=0, description="Same for an item's real-time counters")
    event_id_ttl_s: int = Field(
        86400, ge=1,
        description="How long a client event id is remembered (a retried POST within it counts once)")

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parse_redis_url(v)
        return v

    @classmethod
    def from_platform(cls, platform_cfg, **overrides) -> FeatureStoreConfig:
        """Derive from the platform settings (feature_repo_dir, redis_url, log_dir)."""
        values = {
            "repo_dir": platform_cfg.feature_repo_dir,
            "redis_url": platform_cfg.redis_url,
            "event_log_path": Path(platform_cfg.log_dir) / "events.jsonl",
        }
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ paths
    @property
    def offline_dir(self) -> Path:
        return Path(self.repo_dir) / "offline"

    @property
    def registry_path(self) -> Path:
        return Path(self.repo_dir) / "registry.db"

    @property
    def log_path(self) -> Path:
        return Path(self.event_log_path) if self.event_log_path else Path(self.repo_dir) / "events.jsonl"

    # ------------------------------------------------------------------ redis
    @property
    def is_cluster(self) -> bool:
        """``redis+cluster://``: a Redis Cluster (scripts run per user / per item slot; Feast redis_cluster)."""
        return self.redis_url.split("://", 1)[0].endswith("+cluster")

    @property
    def redis_target(self) -> str:
        """``host:port/db`` of the Redis URL: safe for logs and errors (no password, no user)."""
        return redact_redis_url(self.redis_url)

    def redis_kwargs(self, socket_timeout: float | None = None) -> dict:
        """Keyword arguments for ``redis.Redis`` (host, port, db, password, ssl, timeouts)."""
        kw = parse_redis_url(self.redis_url)
        kw["socket_connect_timeout"] = self.connect_timeout_s
        kw["socket_timeout"] = socket_timeout if socket_timeout is not None else self.read_timeout_s
        return kw

    def feast_connection_string(self, socket_timeout: float | None = None) -> str:
        """Feast's ``host:port,db=N,...`` string; values are JSON-decoded by Feast, then passed to redis-py."""
        kw = self.redis_kwargs(socket_timeout if socket_timeout is not None else self.batch_timeout_s)
        parts = [f"{kw.pop('host')}:{kw.pop('port')}"]
        if self.is_cluster:
            kw.pop("db", None)  # a cluster has db 0 only; Feast's RedisCluster takes no db
        for key, value in kw.items():
            if value is None or value is False:
                continue
            parts.append(f"{key}={'true' if value is True else value}")
        return ",".join(parts)


def _masked(url: str) -> str:
    """The URL with any credentials replaced by ``***`` (for error messages about a malformed URL)."""
    return re.sub(r"://[^@/]*@", "://***@", url)


def parse_redis_url(url: str) -> dict:
    """``redis://[:pw@]host[:port][/db]`` (or ``rediss://``) -> redis.Redis keyword arguments."""
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValueError(f"redis_url must start with redis://, rediss:// or redis+cluster:// (a Redis Cluster), "
                         f"got {_masked(url)!r}")
    if not u.hostname:
        raise ValueError(f"redis_url has no host: {_masked(url)!r}")
    path = u.path.strip("/")
    try:
        db = int(path) if path else 0
        port = u.port or 6379
    except ValueError as e:
        raise ValueError(f"redis_url {_masked(url)!r}: {e}") from e
    if u.scheme.endswith("+cluster") and db != 0:
        raise ValueError(f"redis_url {_masked(url)!r}: a Redis Cluster has only db 0")
    kw: dict = {"host": u.hostname, "port": port, "db": db}
    if u.password:
        if "," in u.password:
            raise ValueError("redis_url password must not contain ',' (Feast connection-string separator)")
        kw["password"] = unquote(u.password)
    if u.username:
        kw["username"] = unquote(u.username)
    if u.scheme.startswith("rediss"):
        kw["ssl"] = True
    return kw


def redact_redis_url(url: str) -> str:
    """``redis://:secret@host:6379/2`` -> ``host:6379/2``: what messages and logs may show of a Redis URL."""
    try:
        kw = parse_redis_url(url)
    except ValueError:
        return "<redis>"
    return f"{kw['host']}:{kw['port']}/{kw['db']}"
