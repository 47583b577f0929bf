"""Batch job: events -> offline feature tables (parquet) with daily point-in-time snapshots.

Each table row is "the features of this entity as of the end of day d" and carries that instant as
``event_timestamp``; a row is written only on days where a value changed, so Feast's as-of join
(latest row with ``event_timestamp <= t``, no TTL) returns exactly the state at the end of the last
completed day before ``t``, and never anything from the future.

Everything is computed on dense [entities, days, ...] numpy grids (bincount + cumsum), in blocks
of entities so memory stays bounded for large catalogs.  1.1M events take a few seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import mmh3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.features.config import FeatureStoreConfig
from recsys.features.online_writer import LATEST_DIR, latest_rows
from recsys.features.repo.definitions import ITEM_PROFILE_TABLE, ITEM_STATS_TABLE, TIMESTAMP_FIELD, USER_TABLE
from recsys.features.schema import (
    DAYS_OF_WEEK,
    EVENT_NAMES,
    HOUR_BUCKETS,
    TEXT_EMBEDDING_DIM,
    TEXT_HASH_BUCKETS,
    WINDOWS,
    day_of_week,
    hour_bucket,
    smoothed_rate,
)
from recsys.features.seen import SEEN_TABLE, seen_table
from recsys.platform.data.schema import EVENT_TYPES, EVENT_WEIGHTS, Dataset, genre_vocabulary

DAY_NS = 86_400 * 10**9
METADATA_FILE = "metadata.json"
USER_IDS_FILE = "catalog_user_ids.npy"
ITEM_IDS_FILE = "catalog_item_ids.npy"
GENESIS_NS = 10**9  # 1970-01-01T00:00:01Z: the all-zero "no activity yet" row of every catalog entity
_BLOCK_CELLS = 1_000_000  # entities x days per block (bounds the dense grids to a few hundred MB)


@dataclass
class OfflineBuildStats:
    user_rows: int
    item_stats_rows: int
    item_profile_rows: int
    first_snapshot: str
    last_snapshot: str
    seconds: float


@dataclass
class _Events:
    """Events sorted by (entity, time) with the integer codes the grids need."""

    ent: np.ndarray  # entity index (row of the catalog)
    day: np.ndarray
    etype: np.ndarray  # index into EVENT_TYPES
    item: np.ndarray  # item index
    item_id: np.ndarray  # raw item id
    ts_s: np.ndarray  # unix seconds (float64)
    rating: np.ndarray  # float32, NaN unless rating
    starts: np.ndarray  # starts[e] = first position of entity e (len n_ent + 1)


def _sorted_events(ev: pd.DataFrame, ent_codes: np.ndarray, item_codes: np.ndarray, day: np.ndarray,
                   etype: np.ndarray, n_ent: int) -> _Events:
    ts_ns = ev["timestamp"].astype("int64").to_numpy()
    order = np.lexsort((ts_ns, ent_codes))
    ent = ent_codes[order]
    return _Events(
        ent=ent, day=day[order], etype=etype[order], item=item_codes[order],
        item_id=ev["item_id"].to_numpy(np.int64)[order], ts_s=ts_ns[order] / 1e9,
        rating=ev["rating"].to_numpy(np.float32)[order],
        starts=np.searchsorted(ent, np.arange(n_ent + 1)),
    )


def _window(cum: np.ndarray, days: int | None) -> np.ndarray:
    """cum[:, d] = total up to day d -> total over the last ``days`` days (axis 1)."""
    if days is None:
        return cum
    out = cum.copy()
    out[:, days:] -= cum[:, :-days]
    return out


def _grid_counts(flat: np.ndarray, codes: np.ndarray, n_codes: int, shape: tuple[int, int]) -> np.ndarray:
    """Cumulative (over days) counts [entities, days, n_codes] of code per (entity, day)."""
    size = shape[0] * shape[1]
    c = np.bincount(flat * n_codes + codes, minlength=size * n_codes).reshape(shape[0], shape[1], n_codes)
    return np.cumsum(c, axis=1, dtype=np.int32)


def _list_array(values: np.ndarray, valid: np.ndarray, pa_type: pa.DataType) -> pa.ListArray:
    """Rows of a padded [N, K] array, keeping only ``valid`` cells (row-major), as an arrow list column."""
    lengths = valid.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[valid], type=pa_type))


def _dense_list(values: np.ndarray) -> pa.ListArray:
    n, k = values.shape
    offsets = np.arange(0, (n + 1) * k, k, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1).astype(np.float32)))


def _activity_block(e: _Events, lo: int, hi: int, n_days: int, snap_ns: np.ndarray, prefix: str,
                    ids: np.ndarray, *, user_extras: dict | None) -> pa.Table | None:
    """Snapshot rows for entities [lo, hi): counts, rates, recency (+ user extras)."""
    s, t = e.starts[lo], e.starts[hi]
    if s == t:
        return None
    nb = hi - lo
    local = e.ent[s:t] - lo
    day = e.day[s:t]
    flat = local * n_days + day
    cum = _grid_counts(flat, e.etype[s:t], len(EVENT_TYPES), (nb, n_days))  # [nb, D, 4]
    total = cum.sum(axis=2)  # events up to day d
    windows = {suffix: _window(cum, days) for suffix, days in WINDOWS}
    prev = np.concatenate([np.zeros((nb, 1, cum.shape[2] * len(windows)), np.int32),
                           np.concatenate(list(windows.values()), axis=2)[:, :-1]], axis=1)
    changed = (np.concatenate(list(windows.values()), axis=2) != prev).any(axis=2)
    rows_e, rows_d = np.nonzero(changed)
    if len(rows_e) == 0:
        return None
    cols: dict[str, pa.Array] = {
        f"{prefix}_id": pa.array(ids[lo + rows_e], pa.int64()),
        TIMESTAMP_FIELD: pa.array(snap_ns[rows_d], pa.timestamp("ns", tz="UTC")),
    }
    for suffix, w in windows.items():
        for k, et in enumerate(EVENT_TYPES):
            cols[f"{prefix}_{EVENT_NAMES[et]}_{suffix}"] = pa.array(w[rows_e, rows_d, k].astype(np.float32))

    r = e.rating[s:t]
    is_rating = ~np.isnan(r)
    rsum = np.cumsum(np.bincount(flat[is_rating], weights=r[is_rating], minlength=nb * n_days)
                     .reshape(nb, n_days), axis=1)[rows_e, rows_d]
    rcnt = windows["all"][rows_e, rows_d, EVENT_TYPES.index("rating")]
    cols[f"{prefix}_avg_rating"] = pa.array(np.where(rcnt > 0, rsum / np.maximum(rcnt, 1), 0.0).astype(np.float32))

    if prefix == "item":
        w30 = windows["30d"][rows_e, rows_d]
        cols["item_ctr_30d"] = pa.array(smoothed_rate(w30[:, 1], w30[:, 0]))
        cols["item_cvr_30d"] = pa.array(smoothed_rate(w30[:, 2], w30[:, 1]))
        return pa.table(cols)

    # ---- user extras: recency, recent items, genres, hour/day-of-week activity
    ts = e.ts_s[s:t]
    last = np.zeros(nb * n_days)
    ends = np.flatnonzero(np.diff(flat, append=np.iinfo(np.int64).max))  # last event of each (entity, day)
    last[flat[ends]] = ts[ends]
    last = np.maximum.accumulate(last.reshape(nb, n_days), axis=1)
    cols["user_last_event_at"] = pa.array(last[rows_e, rows_d], pa.float64())

    k = user_extras["recent_items"]
    end_pos = e.starts[lo + rows_e] + total[rows_e, rows_d]  # one past the last event up to that day
    pos = end_pos[:, None] - 1 - np.arange(k)[None, :]
    valid = pos >= e.starts[lo + rows_e][:, None]
    recent = e.item_id[np.where(valid, pos, 0)]
    cols["user_recent_item_ids"] = _list_array(recent, valid, pa.int64())

    mh = user_extras["multihot"]  # [n_items, G]
    n_genres = mh.shape[1]
    weights = user_extras["event_weights"][e.etype[s:t]] * np.where(is_rating, r / 5.0, 1.0)
    ev_i, g_i = np.nonzero(mh[e.item[s:t]])
    gw = np.bincount(flat[ev_i] * n_genres + g_i, weights=weights[ev_i],
                     minlength=nb * n_days * n_genres).reshape(nb, n_days, n_genres)
    gw = np.cumsum(gw, axis=1)[rows_e, rows_d].astype(np.float32)
    cols["user_genre_weights"] = _dense_list(gw)
    top = np.argsort(-gw, axis=1, kind="stable")[:, :3]
    cols["user_top_genres"] = _list_array(top, np.take_along_axis(gw, top, axis=1) > 0, pa.int64())

    hours = _grid_counts(flat, hour_bucket(ts), HOUR_BUCKETS, (nb, n_days))[rows_e, rows_d]
    dows = _grid_counts(flat, day_of_week(ts), DAYS_OF_WEEK, (nb, n_days))[rows_e, rows_d]
    cols["user_hour_counts"] = _dense_list(hours)
    cols["user_dow_counts"] = _dense_list(dows)
    return pa.table(cols)


def _activity_table(e: _Events, ids: np.ndarray, n_days: int, snap_ns: np.ndarray, prefix: str,
                    user_extras: dict | None = None, progress: bool = False) -> pa.Table:
    n_ent = len(ids)
    block = max(1, _BLOCK_CELLS // max(n_days, 1))
    parts = []
    for lo in range(0, n_ent, block):
        part = _activity_block(e, lo, min(lo + block, n_ent), n_days, snap_ns, prefix, ids, user_extras=user_extras)
        if part is not None:
            parts.append(part)
    if not parts:
        raise ValueError(f"no {prefix} rows: the dataset has no events")
    table = pa.concat_tables(parts)
    return pa.concat_tables([_genesis_rows(table.schema, ids, prefix), table])


def _genesis_rows(schema: pa.Schema, ids: np.ndarray, prefix: str) -> pa.Table:
    """One all-zero row per catalog entity at GENESIS_NS.

    Feast's file offline store drops entity rows that have no feature row at or before their
    timestamp (instead of returning nulls), so every entity gets an explicit "nothing happened
    yet" row; it also gives inactive entities zeros online after materialization.
    """
    n = len(ids)
    cols = {}
    for f in schema:
        if f.name == f"{prefix}_id":
            cols[f.name] = pa.array(ids, pa.int64())
        elif f.name == TIMESTAMP_FIELD:
            cols[f.name] = pa.array(np.full(n, GENESIS_NS, dtype=np.int64), f.type)
        elif pa.types.is_list(f.type):
            empty = pa.array([], f.type.value_type)
            cols[f.name] = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), empty)
        else:
            cols[f.name] = pa.array(np.zeros(n), f.type)
    return pa.table(cols, schema=schema)


# ------------------------------------------------------------------ item profile
def _tokens(text: str) -> list[str]:
    return [w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split() if len(w) > 2]


def text_features(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Signed hashed TF-IDF embeddings [N, TEXT_EMBEDDING_DIM] (L2-normalised) and top-token hash ids [N]."""
    docs = [_tokens(t) for t in texts]
    df: dict[str, int] = {}
    for d in docs:
        for w in set(d):
            df[w] = df.get(w, 0) + 1
    n = len(docs)
    emb = np.zeros((n, TEXT_EMBEDDING_DIM), dtype=np.float32)
    top = np.zeros(n, dtype=np.int64)
    cache: dict[str, tuple[int, float, int]] = {}
    for i, d in enumerate(docs):
        tf: dict[str, int] = {}
        for w in d:
            tf[w] = tf.get(w, 0) + 1
        best, best_w = None, -1.0
        for w, c in tf.items():
            if w not in cache:
                h = mmh3.hash(w, 17, signed=False)
                cache[w] = (h % TEXT_EMBEDDING_DIM, 1.0 if (h >> 16) & 1 else -1.0, mmh3.hash(w, 23, signed=False))
            b, sign, hid = cache[w]
            weight = c * (np.log((1 + n) / (1 + df[w])) + 1.0)
            emb[i, b] += sign * weight
            if weight > best_w or (weight == best_w and w < best):
                best, best_w = w, weight
        if best is not None:
            top[i] = cache[best][2] % (TEXT_HASH_BUCKETS - 1) + 1  # 0 = no text
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-9), top


def _item_profile_table(items: pd.DataFrame, vocab: list[str]) -> tuple[pa.Table, np.ndarray]:
    index = {g: i for i, g in enumerate(vocab)}
    genre_lists = [[index[g] for g in str(s).split("|") if g in index] for s in items["genres"]]
    mh = np.zeros((len(items), len(vocab)), dtype=np.float32)
    for i, gl in enumerate(genre_lists):
        mh[i, gl] = 1.0
    emb, top = text_features((items["title"].astype(str) + " " + items["description"].astype(str)).tolist())
    created = items["created_at"].astype("int64").to_numpy()
    table = pa.table({
        "item_id": pa.array(items["item_id"].to_numpy(np.int64)),
        # Static content is known from the start (no behaviour in it): a genesis timestamp keeps
        # training rows that predate an item's creation (see _genesis_rows).
        TIMESTAMP_FIELD: pa.array(np.full(len(items), GENESIS_NS, dtype=np.int64), pa.timestamp("ns", tz="UTC")),
        "item_genre_ids": pa.array(genre_lists, pa.list_(pa.int64())),
        "item_genre_multihot": _dense_list(mh),
        "item_n_genres": pa.array(mh.sum(axis=1).astype(np.float32)),
        "item_text_embedding": _dense_list(emb),
        "item_text_hash": pa.array(top, pa.int64()),
        "item_created_at": pa.array(created / 1e9, pa.float64()),
    })
    return table, mh


# ------------------------------------------------------------------ entry point
def build_offline_features(dataset: Dataset, cfg: FeatureStoreConfig, progress: bool = True) -> OfflineBuildStats:
    """Write the offline tables (+ catalog and metadata) into ``cfg.offline_dir``."""
    t0 = time.perf_counter()
    ev, items, users = dataset.events, dataset.items, dataset.users
    if len(ev) == 0:
        raise ValueError("dataset has no events")
    user_ids = users["user_id"].to_numpy(np.int64)
    item_ids = items["item_id"].to_numpy(np.int64)
    u_codes = pd.Index(user_ids).get_indexer(ev["user_id"].to_numpy(np.int64))
    i_codes = pd.Index(item_ids).get_indexer(ev["item_id"].to_numpy(np.int64))
    if (u_codes < 0).any() or (i_codes < 0).any():
        raise ValueError("events refer to users/items missing from the catalog (run Dataset.validate())")
    etype = pd.Categorical(ev["event_type"], categories=list(EVENT_TYPES)).codes.astype(np.int64)
    ts_ns = ev["timestamp"].astype("int64").to_numpy()
    day0 = (ts_ns.min() // DAY_NS) * DAY_NS
    day = (ts_ns - day0) // DAY_NS
    n_days = int(day.max()) + 1
    snap_ns = day0 + (np.arange(n_days, dtype=np.int64) + 1) * DAY_NS  # end of day d

    vocab = genre_vocabulary(items)
    profile, multihot = _item_profile_table(items, vocab)
    extras = {
        "recent_items": cfg.recent_items,
        "multihot": multihot,
        "event_weights": np.array([EVENT_WEIGHTS[t] for t in EVENT_TYPES]),
    }
    if progress:
        print(f"building offline features: {len(ev):,} events, {len(user_ids):,} users, "
              f"{len(item_ids):,} items, {n_days} daily snapshots", flush=True)
    user_table = _activity_table(_sorted_events(ev, u_codes, i_codes, day, etype, len(user_ids)),
                                 user_ids, n_days, snap_ns, "user", user_extras=extras)
    item_table = _activity_table(_sorted_events(ev, i_codes, i_codes, day, etype, len(item_ids)),
                                 item_ids, n_days, snap_ns, "item")

    out = cfg.offline_dir
    out.mkdir(parents=True, exist_ok=True)
    seen = seen_table(ev["user_id"].to_numpy(np.int64), ev["item_id"].to_numpy(np.int64), ts_ns)
    for table, name in ((user_table, USER_TABLE), (item_table, ITEM_STATS_TABLE), (profile, ITEM_PROFILE_TABLE),
                        (seen, SEEN_TABLE)):
        tmp = out / (name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(out / name)  # readers never see a half-written table
    (out / LATEST_DIR).mkdir(exist_ok=True)
    for table, name, key in ((user_table, USER_TABLE, "user_id"), (item_table, ITEM_STATS_TABLE, "item_id"),
                             (profile, ITEM_PROFILE_TABLE, "item_id")):  # materialization's fast path
        tmp = out / LATEST_DIR / (name + ".tmp")
        pq.write_table(latest_rows(table, key), tmp)
        tmp.replace(out / LATEST_DIR / name)
    np.save(out / USER_IDS_FILE, user_ids)
    np.save(out / ITEM_IDS_FILE, item_ids)
    first = pd.Timestamp(GENESIS_NS, tz="UTC")
    stats = OfflineBuildStats(
        user_rows=user_table.num_rows, item_stats_rows=item_table.num_rows, item_profile_rows=profile.num_rows,
        first_snapshot=first.isoformat(), last_snapshot=pd.Timestamp(snap_ns[-1], tz="UTC").isoformat(),
        seconds=round(time.perf_counter() - t0, 3),
    )
    meta = {"genre_vocabulary": vocab, "dataset": dataset.name, "dataset_hash": dataset.content_hash(),
            "recent_items": cfg.recent_items, **asdict(stats)}
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    if progress:
        print(f"wrote {stats.user_rows:,} user, {stats.item_stats_rows:,} item-stats and "
              f"{stats.item_profile_rows:,} item-profile rows to {out} in {stats.seconds:.1f}s", flush=True)
    return stats


def load_metadata(cfg: FeatureStoreConfig) -> dict:
    """The metadata.json of the last build (genre vocabulary, snapshot range)."""
    from recsys.features.errors import FeatureStoreError

    path = cfg.offline_dir / METADATA_FILE
    if not path.exists():
        raise FeatureStoreError(f"{path} does not exist: build the offline tables first (`recsys features build`)")
    return json.loads(path.read_text())
