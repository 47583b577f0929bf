"""Which engine moves offline rows into Redis, and the watermark that makes materialization incremental.

Engines (``recsys features materialize --engine``), all writing Feast's online layout:

* ``inline`` (default): :func:`recsys.features.online_writer.write_inline` in this process;
* ``ray-data``: the same encoder in Ray Data ``map_batches`` actors (parallel, for a cluster);
* ``feast``: Feast's local engine (``store.materialize``), the reference;
* ``feast-ray``: Feast's contrib Ray compute engine (``batch_engine: type: ray.engine`` over the
  ``ray`` offline store, rendered into ``<repo_dir>/feast_ray/feature_store.yaml``).

The default is the fastest in ``benchmarks/materialize.py`` (all four in one run; figures in
docs/features.md). The watermark is the end of the last successful run, kept in Redis next to the
rows it describes: if Redis loses the rows (a new instance, a flush) it loses the watermark too, and
the next incremental run falls back to a full load instead of skipping entities.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from recsys.features.config import FeatureStoreConfig
from recsys.features.repo.definitions import ITEM_PROFILE_TABLE, ITEM_STATS_TABLE, USER_TABLE
from recsys.features.schema import ITEM_PROFILE_VIEW, ITEM_STATS_VIEW, USER_CONTEXT_VIEW, USER_STATS_VIEW

ENGINES = ("inline", "ray-data", "feast", "feast-ray")
DEFAULT_ENGINE = "inline"

# (offline table, entity key, views it feeds): the two user views share one table and one Redis hash.
TABLE_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (USER_TABLE, "user_id", (USER_STATS_VIEW, USER_CONTEXT_VIEW)),
    (ITEM_STATS_TABLE, "item_id", (ITEM_STATS_VIEW,)),
    (ITEM_PROFILE_TABLE, "item_id", (ITEM_PROFILE_VIEW,)),
)


def watermark_key(project: str) -> str:
    """Redis key holding the end (ns since epoch) of the project's last successful materialization."""
    return f"recsys:features:{project}:materialized_until_ns"


def read_watermark(redis_client, project: str) -> int | None:
    raw = redis_client.get(watermark_key(project))
    return int(raw) if raw is not None else None


def write_watermark(redis_client, project: str, end_ns: int) -> None:
    redis_client.set(watermark_key(project), str(int(end_ns)))


def write_direct(cfg: FeatureStoreConfig, start_ns: int, end_ns: int, engine: str, last_snapshot_ns: int,
                 concurrency: int = 2) -> dict[str, int]:
    """Newest row per entity with start_ns < ts <= end_ns of every view, written by ``inline``/``ray-data``.

    Up to the build's last snapshot (``end_ns >= last_snapshot_ns``) the newest row in the window is the
    entity's newest row overall, if it is after ``start_ns``: read from the build's latest-row tables."""
    from recsys.features.errors import FeatureStoreError
    from recsys.features.online_writer import LATEST_DIR, latest_index, write_inline, write_ray
    from recsys.features.redis_clients import sync_client

    if engine == "ray-data" and cfg.is_cluster:
        raise FeatureStoreError("engine ray-data does not write to a Redis Cluster yet: use --engine inline")
    rows: dict[str, int] = {}
    kwargs = cfg.redis_kwargs(socket_timeout=cfg.batch_timeout_s) if engine == "ray-data" else {}
    for table, key, views in TABLE_GROUPS:
        path = cfg.offline_dir / table
        if end_ns >= last_snapshot_ns and (cfg.offline_dir / LATEST_DIR / table).exists():
            path = cfg.offline_dir / LATEST_DIR / table
        index = latest_index(path, key, start_ns, end_ns)
        ttl = cfg.online_user_ttl_s if key == "user_id" else 0  # item rows: bounded by the catalog
        if engine == "ray-data":
            _ensure_ray()
            n = write_ray(kwargs, path, cfg.project, views, key, index, concurrency=concurrency, ttl_s=ttl)
        else:
            with sync_client(cfg, cfg.batch_timeout_s) as client:
                n = write_inline(client, path, cfg.project, views, key, index, ttl_s=ttl)
        rows.update({v: n for v in views})
    return rows


def _ensure_ray() -> None:
    """Join the running Ray (a KubeRay job, a test session) or start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto" if _cluster_running() else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)


def _cluster_running() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


_FEAST_RAY_YAML = Template("""\
# Rendered by recsys.features.materialize_engines (engine feast-ray): same registry and Redis as
# ../feature_store.yaml, with Feast's contrib Ray offline store and compute engine.
project: ${project}
provider: local
registry:
  registry_type: file
  path: ${registry_path}
  cache_ttl_seconds: 60
online_store:
  type: redis
  redis_type: ${redis_type}
  connection_string: "${connection_string}"
offline_store:
  type: ray
  storage_path: ${storage_path}
batch_engine:
  type: ray.engine
  max_workers: ${workers}
  write_concurrency: ${workers}
entity_key_serialization_version: 3
""")


def feast_ray_store(cfg: FeatureStoreConfig, workers: int = 2):
    """A FeatureStore whose materialization runs on Feast's Ray compute engine."""
    from feast import FeatureStore

    repo = (Path(cfg.repo_dir) / "feast_ray").resolve()
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(_FEAST_RAY_YAML.substitute(
        project=cfg.project, registry_path=str(cfg.registry_path.resolve()),
        connection_string=cfg.feast_connection_string(),
        redis_type="redis_cluster" if cfg.is_cluster else "redis", storage_path=str(repo / "ray_storage"),
        workers=workers))
    _ensure_ray()
    return FeatureStore(repo_path=str(repo))


def to_ns(ts) -> int:
    import pandas as pd

    return int(pd.Timestamp(ts).value)
