"""Every item a user has interacted with, in recency order, online: serving's seen filter and history.

Why (both found by ``tests/serving/test_evaluator_parity.py``, which holds serving to the offline
evaluator):

* the evaluator (and the ranker's training lists) drop *all* of a user's past items before taking
  each source's top-k; serving dropped only the recent-items list, so a user with a long history was
  shown items they had already watched, and got fewer fresh candidates than the ranker trained on;
* training's history (two-tower fold-in, item-kNN, recent-similarity features) is the user's last
  *distinct* items in the one history order (``recsys.platform.data.history``: last interaction, then
  item id); serving de-duplicated the 20 most recent *events* (``user_recent_item_ids``), which leaves
  fewer items whenever an item repeats.

Layout (next to the real-time overlay, :class:`~recsys.features.realtime.OverlayKeys`)::

    P:u:{user}:sb   the batch part: "id,id,...," each distinct item once, oldest last-interaction
                    first, as of the materialization end (written by ``materialize``)
    P:u:{user}:s    the real-time part: the apply script appends "id," per event (trimmed to the cap)

Read as one sequence (batch, then live), the newest distinct ids are the user's history and the
whole set is the seen filter. Ids are decimal text, not packed binary: item ids span all of int64
and the apply script (Lua numbers are doubles) must copy them exactly. The list is capped at
``FeatureStoreConfig.seen_items`` (newest kept), far above the recent-items feature's 20.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.platform.data.history import history_order, newest_distinct

SEEN_TABLE = "user_seen.parquet"
"""Offline table (in ``offline_dir``): one row per (user, item), first and last interaction time (ns)."""


def seen_table(user_ids: np.ndarray, item_ids: np.ndarray, ts_ns: np.ndarray) -> pa.Table:
    """(user_id, item_id, first_ts, last_ts) of every distinct pair."""
    df = pd.DataFrame({"user_id": np.asarray(user_ids, np.int64), "item_id": np.asarray(item_ids, np.int64),
                       "ts": np.asarray(ts_ns, np.int64)})
    g = df.groupby(["user_id", "item_id"], sort=True)["ts"]
    out = pd.DataFrame({"first_ts": g.min(), "last_ts": g.max()}).reset_index()
    return pa.Table.from_pandas(out, preserve_index=False)


def pack(item_ids: Sequence[int] | np.ndarray) -> bytes:
    """The stored form: "id,id,...," (empty for no items)."""
    return "".join(f"{int(i)}," for i in item_ids).encode()


def unpack(*blobs: bytes | str | None) -> np.ndarray:
    """Item ids of the stored parts (int64, in stored order; an id may repeat across parts).

    ``np.fromstring`` in text mode parses 2,000 ids in ~45 µs (a Python split + int: ~0.5 ms), which
    matters on the request path.
    """
    parts = [b.decode() if isinstance(b, bytes) else b for b in blobs if b]
    if not parts:
        return np.zeros(0, np.int64)
    return np.fromstring("".join(parts), dtype=np.int64, sep=",")


def recent_distinct(ids: np.ndarray, k: int, tail: int | None = None) -> list[int]:
    """The newest ``k`` distinct ids of an oldest-first sequence, newest first: the shared history rule
    (:func:`recsys.platform.data.history.newest_distinct`)."""
    return newest_distinct(ids, k, tail)


def write_seen_sets(redis_client, keys, table_path, end: datetime, cap: int, chunk_users: int = 2000,
                    since: int | None = None, ttl_s: int = 0) -> int:
    """Replace every user's batch part with their items first seen at or before ``end`` (the newest
    ``cap`` by last interaction); returns how many users were written. Pipelined, ``chunk_users`` keys
    per round trip. An item whose last interaction is after ``end`` (materializing an earlier instant
    than the build) is ordered by its first one: the exact last one before ``end`` is not stored.

    ``since`` (ns, the previous run's end): only users with an interaction after it are rewritten (an
    incremental run); the others' stored sets are already right.

    ``ttl_s`` (``FeatureStoreConfig.online_user_ttl_s``; 0 = none): each written set expires that long after
    this write, like the user's real-time keys after their last event. An incremental run rewrites only
    users with new interactions, so the set of a user who stays away expires ``ttl_s`` after the last run
    that saw them active (bounded Redis; the user is cold again when they return). Relative to the write,
    not to the interaction time: a full materialization of an old dataset keeps every user's set."""
    if cap <= 0 or not table_path.exists():
        return 0
    end_ns = pd.Timestamp(end).value
    df = pq.read_table(table_path, filters=[("first_ts", "<=", end_ns)]).to_pandas()
    if df.empty:
        return 0
    df = df.assign(order=np.where(df["last_ts"] <= end_ns, df["last_ts"], df["first_ts"]))
    if since is not None:
        changed = df.loc[df["order"] > since, "user_id"].unique()
        df = df[df["user_id"].isin(changed)]
        if df.empty:
            return 0
    users, items = history_order(df["user_id"].to_numpy(np.int64), df["item_id"].to_numpy(np.int64),
                                 df["order"].to_numpy(np.int64))
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    stops = np.r_[starts[1:], len(users)]
    for c in range(0, len(starts), chunk_users):
        with redis_client.pipeline(transaction=False) as pipe:
            for a, b in zip(starts[c:c + chunk_users], stops[c:c + chunk_users], strict=True):
                pipe.set(keys.seen_batch(int(users[a])), pack(items[max(a, b - cap):b]), ex=ttl_s or None)
            pipe.execute()
    return len(starts)
