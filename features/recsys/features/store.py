"""Side effects on the Feast repo: render feature_store.yaml, apply, materialize, historical retrieval.

Feast owns the registry, the offline point-in-time join and every write to Redis (materialize and
push); this module only wires our config into it and adds progress and throughput reporting.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.features.config import FeatureStoreConfig
from recsys.features.dask_tokens import fast_object_tokens
from recsys.features.errors import FeatureStoreError, FeatureStoreUnavailable
from recsys.features.materialize_engines import (
    DEFAULT_ENGINE,
    ENGINES,
    feast_ray_store,
    read_watermark,
    to_ns,
    write_direct,
    write_watermark,
)
from recsys.features.offline import load_metadata
from recsys.features.online import materialization_key
from recsys.features.realtime import OverlayKeys
from recsys.features.redis_clients import sync_client
from recsys.features.repo.definitions import (
    ITEM_PROFILE_TABLE,
    ITEM_STATS_TABLE,
    TIMESTAMP_FIELD,
    USER_TABLE,
    build_definitions,
)
from recsys.features.schema import (
    ITEM_PROFILE_VIEW,
    ITEM_STATS_VIEW,
    RANKER_FEATURES,
    USER_CONTEXT_VIEW,
    USER_STATS_VIEW,
    VIEW_FEATURES,
    pad_lists,
    ranker_matrix,
)
from recsys.features.seen import SEEN_TABLE, write_seen_sets

_REDIS_ERRORS: tuple[type[BaseException], ...]
try:
    import redis

    _REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
except ImportError:  # pragma: no cover - feast[redis] is a dependency
    _REDIS_ERRORS = (OSError,)

VIEW_TABLES = {USER_STATS_VIEW: USER_TABLE, USER_CONTEXT_VIEW: USER_TABLE,
               ITEM_STATS_VIEW: ITEM_STATS_TABLE, ITEM_PROFILE_VIEW: ITEM_PROFILE_TABLE}
VIEW_KEYS = {USER_STATS_VIEW: "user_id", USER_CONTEXT_VIEW: "user_id",
             ITEM_STATS_VIEW: "item_id", ITEM_PROFILE_VIEW: "item_id"}


@dataclass
class MaterializeStats:
    """What one materialization wrote: entity rows per view, over which interval, how fast."""

    start: datetime
    end: datetime
    rows_by_view: dict[str, int]
    seconds: float
    scanned_rows: int = 0  # offline snapshot rows in [start, end] that Feast read to find the latest ones
    version: int = 0  # the project's materialization counter after this run (readers re-read on a change)
    seen_users: int = 0  # users whose already-seen item set was written (recsys.features.seen)
    engine: str = DEFAULT_ENGINE
    rows_seconds: float = 0.0  # the feature rows alone (without the seen sets and the version bump)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_view.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        per_view = ", ".join(f"{k}={v:,}" for k, v in self.rows_by_view.items())
        return (f"materialized {self.rows:,} rows ({per_view}) with engine {self.engine} for "
                f"{self.start:%Y-%m-%d %H:%M} .. "
                f"{self.end:%Y-%m-%d %H:%M} in {self.seconds:.2f}s = {self.rows_per_s:,.0f} rows/s "
                f"(scanned {self.scanned_rows:,} snapshot rows = "
                f"{self.scanned_rows / max(self.seconds, 1e-9):,.0f}/s); "
                f"seen-item sets of {self.seen_users:,} users; feature rows alone {self.rows_seconds:.2f}s; "
                f"materialization version {self.version}")


# ------------------------------------------------------------------ repo files
def render_feature_store_yaml(cfg: FeatureStoreConfig) -> Path:
    """Write <repo_dir>/feature_store.yaml (+ the features.py shim for the feast CLI) from the template."""
    repo = Path(cfg.repo_dir).resolve()
    repo.mkdir(parents=True, exist_ok=True)
    pkg = resources.files("recsys.features.repo")
    text = Template(pkg.joinpath("feature_store.template.yaml").read_text()).substitute(
        project=cfg.project,
        registry_path=str(cfg.registry_path.resolve()),
        connection_string=cfg.feast_connection_string(),
        redis_type="redis_cluster" if cfg.is_cluster else "redis",  # Feast's own RedisCluster client
    )
    path = repo / "feature_store.yaml"
    path.write_text(text)
    (repo / "features.py").write_text(pkg.joinpath("features_shim.py.txt").read_text())
    return path


def feature_store(cfg: FeatureStoreConfig):
    """A Feast FeatureStore on the rendered repo (renders the yaml when missing or stale)."""
    from feast import FeatureStore

    path = Path(cfg.repo_dir) / "feature_store.yaml"
    if not path.exists() or cfg.feast_connection_string() not in path.read_text():
        render_feature_store_yaml(cfg)
    return FeatureStore(repo_path=str(Path(cfg.repo_dir).resolve()))


def _check_built(cfg: FeatureStoreConfig) -> dict:
    meta = load_metadata(cfg)
    for table in (USER_TABLE, ITEM_STATS_TABLE, ITEM_PROFILE_TABLE):
        if not (cfg.offline_dir / table).exists():
            raise FeatureStoreError(f"{cfg.offline_dir / table} is missing: run `recsys features build`")
    return meta


def apply(cfg: FeatureStoreConfig) -> None:
    """Register entities, sources and feature views (``feast apply``) and create the online tables."""
    _check_built(cfg)
    render_feature_store_yaml(cfg)
    store = feature_store(cfg)
    objects = list(build_definitions(cfg.offline_dir).values())
    try:
        store.apply(objects)
    except _REDIS_ERRORS as e:
        raise FeatureStoreUnavailable(
            f"online store {cfg.redis_target} unreachable during apply: {type(e).__name__}") from e


def _rows_in_interval(cfg: FeatureStoreConfig, view: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(entities whose latest row in [start, end] Feast writes for ``view``, rows in the interval)."""
    key = VIEW_KEYS[view]
    t = pq.read_table(cfg.offline_dir / VIEW_TABLES[view], columns=[key, TIMESTAMP_FIELD]).to_pandas()
    ts = t[TIMESTAMP_FIELD]
    mask = (ts >= pd.Timestamp(start)) & (ts <= pd.Timestamp(end))
    return int(t.loc[mask, key].nunique()), int(mask.sum())


def materialize(cfg: FeatureStoreConfig, end: datetime | None = None, start: datetime | None = None,
                incremental: bool = False, progress: bool = True, engine: str = DEFAULT_ENGINE,
                concurrency: int = 2) -> MaterializeStats:
    """Load the latest offline row per entity with timestamp in (start, end] into Redis (Feast's layout).

    Default ``end`` is the last snapshot of the build (not "now": the synthetic data may end in the
    past and a later ``end`` would just scan more); default ``start`` is the earliest offline row.
    ``incremental`` starts at the watermark of the previous successful run (kept in Redis), so only
    entities with a new snapshot row - the users and items that changed - are written, and only
    those users' seen sets. ``engine``: one of :data:`~recsys.features.materialize_engines.ENGINES`.
    """
    if engine not in ENGINES:
        raise FeatureStoreError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    meta = _check_built(cfg)
    end = end or pd.Timestamp(meta["last_snapshot"]).to_pydatetime()
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    store = feature_store(cfg)
    views = [USER_STATS_VIEW, USER_CONTEXT_VIEW, ITEM_STATS_VIEW, ITEM_PROFILE_VIEW]
    try:
        registered = {fv.name for fv in store.list_feature_views()}
    except Exception as e:  # noqa: BLE001 - registry missing or unreadable
        raise FeatureStoreError(f"feature registry unreadable ({e}): run `recsys features apply`") from e
    if set(views) - registered:
        raise FeatureStoreError(f"feature views {sorted(set(views) - registered)} not registered: "
                                "run `recsys features apply` first")
    first = pd.Timestamp(meta["first_snapshot"]).floor("s").to_pydatetime() - pd.Timedelta(seconds=1)
    watermark = None
    if incremental:
        try:
            with sync_client(cfg, cfg.batch_timeout_s) as r:
                watermark = read_watermark(r, cfg.project)
        except _REDIS_ERRORS as e:
            raise FeatureStoreUnavailable(f"online store {cfg.redis_target} unreachable: {type(e).__name__}") from e
        if watermark is not None:
            start = pd.Timestamp(watermark, tz="UTC").to_pydatetime()
    start = start or first
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    t0 = time.perf_counter()
    try:
        if engine in ("inline", "ray-data"):
            rows = write_direct(cfg, to_ns(start), to_ns(end), engine, to_ns(meta["last_snapshot"]),
                                concurrency=concurrency)
            scanned = 0
        else:
            counts = {v: _rows_in_interval(cfg, v, start, end) for v in views}
            rows, scanned = {v: c[0] for v, c in counts.items()}, sum(c[1] for c in counts.values())
            t0 = time.perf_counter()
            fstore = feast_ray_store(cfg, concurrency) if engine == "feast-ray" else store
            with fast_object_tokens(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Discarding nonzero nanoseconds")
                fstore.materialize(start_date=start, end_date=end, feature_views=views)
    except _REDIS_ERRORS as e:
        raise FeatureStoreUnavailable(
            f"online store {cfg.redis_target} unreachable while materializing: {type(e).__name__}") from e
    rows_seconds = time.perf_counter() - t0
    with sync_client(cfg, cfg.batch_timeout_s) as r:  # RedisCluster for a redis+cluster:// URL
        try:  # serving's already-seen filter and history (recsys.features.seen)
            seen_users = write_seen_sets(r, OverlayKeys(cfg.project), cfg.offline_dir / SEEN_TABLE, end,
                                         cfg.seen_items, since=watermark, ttl_s=cfg.online_user_ttl_s)
        except _REDIS_ERRORS as e:
            raise FeatureStoreUnavailable(
                f"online store {cfg.redis_target} unreachable while writing the seen-item sets (feature rows "
                f"written; re-run materialize): {type(e).__name__}") from e
        try:  # after the rows: a reader that sees the new version finds them all written
            stats_version = int(r.incr(materialization_key(cfg.project)))
            write_watermark(r, cfg.project, to_ns(end))
        except _REDIS_ERRORS as e:
            raise FeatureStoreUnavailable(
                f"online store {cfg.redis_target} unreachable after materializing (rows written, readers "
                f"not notified; re-run materialize): {type(e).__name__}") from e
    stats = MaterializeStats(start=start, end=end, rows_by_view=rows, seconds=time.perf_counter() - t0,
                             scanned_rows=scanned, version=stats_version, seen_users=seen_users,
                             engine=engine, rows_seconds=rows_seconds)
    if progress:
        print(stats.summary(), flush=True)
    return stats


# ------------------------------------------------------------------ training data
def historical_raw_features(cfg: FeatureStoreConfig, entity_df: pd.DataFrame, store=None,
                            engine: str = "auto") -> pd.DataFrame:
    """entity_df [user_id, item_id, event_timestamp] + every raw feature, point in time (Feast as-of join).

    Feast is asked once per entity type with the *unique* (id, timestamp) pairs: its file offline
    store collapses request rows that share a view's join key and timestamp (and drops rows without
    a match), so asking with the raw (user, item, time) rows would lose values.  The answers are
    then left-joined back onto the request rows, keeping their order and index.

    ``engine``: "feast" (Feast's get_historical_features), "asof" (the same as-of join done with
    ``pandas.merge_asof`` on the same parquet tables: latest row with timestamp <= the request
    time, no TTL - a test checks both give identical frames) or "auto" (Feast up to
    ``FEAST_JOIN_MAX_ROWS`` unique request keys, asof above: Feast's dask join costs ~2 ms/row
    here, 100k training rows would take minutes).
    """
    if engine not in ("auto", "feast", "asof"):
        raise ValueError(f"engine must be auto, feast or asof, not {engine!r}")
    missing = {"user_id", "item_id", "event_timestamp"} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df is missing columns {sorted(missing)}")
    _check_built(cfg)
    store = store or (feature_store(cfg) if engine != "asof" else None)
    edf = entity_df[["user_id", "item_id", "event_timestamp"]].copy()
    edf["event_timestamp"] = pd.to_datetime(edf["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    edf["user_id"] = edf["user_id"].astype(np.int64)
    edf["item_id"] = edf["item_id"].astype(np.int64)
    out = edf.reset_index(drop=True)
    for key, views in (("user_id", (USER_STATS_VIEW, USER_CONTEXT_VIEW)),
                       ("item_id", (ITEM_STATS_VIEW, ITEM_PROFILE_VIEW))):
        req = edf[[key, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
        if engine == "asof" or (engine == "auto" and len(req) > FEAST_JOIN_MAX_ROWS):
            got = _asof_join(cfg, req, key, views)
        else:
            refs = [f"{view}:{name}" for view in views for name in VIEW_FEATURES[view]]
            with fast_object_tokens(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Discarding nonzero nanoseconds")
                got = store.get_historical_features(entity_df=req, features=refs).to_df()
        got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
        got = got.drop_duplicates([key, "event_timestamp"])
        out = out.merge(got, on=[key, "event_timestamp"], how="left")
    out.index = entity_df.index
    return out


FEAST_JOIN_MAX_ROWS = 5_000


def _asof_join(cfg: FeatureStoreConfig, req: pd.DataFrame, key: str, views: tuple[str, ...]) -> pd.DataFrame:
    """Feast's point-in-time semantics with pandas: per view, the latest row with ts <= request ts."""
    out = req.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    for table in dict.fromkeys(VIEW_TABLES[v] for v in views):
        names = [n for v in views if VIEW_TABLES[v] == table for n in VIEW_FEATURES[v]]
        feats = pq.read_table(cfg.offline_dir / table, columns=[key, TIMESTAMP_FIELD, *names]).to_pandas()
        feats = feats.rename(columns={TIMESTAMP_FIELD: "_feature_ts"})
        feats["_feature_ts"] = feats["_feature_ts"].astype("datetime64[ns, UTC]")
        feats = feats[feats[key].isin(out[key].unique())].sort_values("_feature_ts", kind="stable")
        out = pd.merge_asof(out, feats, left_on="event_timestamp", right_on="_feature_ts", by=key,
                            direction="backward", allow_exact_matches=True).drop(columns="_feature_ts")
    return out


def ranker_matrix_from_frame(frame: pd.DataFrame, n_genres: int, recent_items: int) -> np.ndarray:
    """Raw-feature rows (one per (user, item, time)) -> float32 [N, len(RANKER_FEATURES)]."""
    from recsys.features.schema import DAYS_OF_WEEK, HOUR_BUCKETS, USER_RAW_FEATURES

    raw: dict[str, np.ndarray] = {}
    widths = {"user_genre_weights": n_genres, "item_genre_multihot": n_genres, "user_hour_counts": HOUR_BUCKETS,
              "user_dow_counts": DAYS_OF_WEEK, "user_recent_item_ids": recent_items}
    for name in widths:
        fill = -1 if name == "user_recent_item_ids" else 0
        raw[name] = pad_lists(frame[name].tolist(), widths[name], fill=fill,
                              dtype=np.int64 if fill == -1 else np.float32)
    for name in [*USER_RAW_FEATURES, *VIEW_FEATURES[ITEM_STATS_VIEW], *VIEW_FEATURES[ITEM_PROFILE_VIEW]]:
        if name not in raw and (name in RANKER_FEATURES or name in ("user_last_event_at", "item_created_at")):
            raw[name] = pd.to_numeric(frame[name], errors="coerce").fillna(0).to_numpy(np.float64)
    request_s = pd.to_datetime(frame["event_timestamp"], utc=True).astype("int64").to_numpy() / 1e9
    return ranker_matrix(raw, frame["item_id"].to_numpy(np.int64), request_s)


def get_training_features(cfg: FeatureStoreConfig, entity_df: pd.DataFrame,
                          extra: tuple[str, ...] = (), engine: str = "auto") -> pd.DataFrame:
    """entity_df columns + every RANKER_FEATURES column (float32), point-in-time correct.

    Features of a row come from the latest snapshot at or before its ``event_timestamp`` (the end
    of the last completed day), never later.  ``extra`` adds raw feature columns (e.g.
    ``user_recent_item_ids`` for sequence models).
    """
    meta = _check_built(cfg)
    raw = historical_raw_features(cfg, entity_df, engine=engine)
    mat = ranker_matrix_from_frame(raw, len(meta["genre_vocabulary"]), meta.get("recent_items", cfg.recent_items))
    out = entity_df.copy()
    feats = pd.DataFrame(mat, columns=RANKER_FEATURES, index=entity_df.index)
    out = pd.concat([out.drop(columns=[c for c in RANKER_FEATURES if c in out.columns]), feats], axis=1)
    for name in extra:
        out[name] = raw[name].to_numpy()
    return out
