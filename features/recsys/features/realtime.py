"""Real-time overlay: what events since the last batch build added to a user's and an item's features.

Why an overlay instead of rewriting Feast's rows: Feast stores each feature as a serialized protobuf,
so an increment is a read-modify-write, and two writers of the same user lose updates. The overlay is
plain Redis counters next to Feast's rows, changed only by one Lua script (:data:`APPLY_SCRIPT`) that
the stream consumer runs per batch (:mod:`recsys.features.stream_scripts`), so every increment is atomic,
a batch is all-or-nothing, and a re-delivered stream entry is never counted twice (the script XACKs each
entry first and skips it when the entry was already acknowledged). Readers
(:class:`~recsys.features.online.OnlineFeatureClient`) add the overlay to the batch row on every read.

Key names and layout: :mod:`recsys.features.keys` (every key of one user carries the hash tag
``{u:<id>}``, of one item ``{i:<id>}``). Per user: a hash of counters (``c:{clicks|views|...}:{day|all}``,
``rsum``, ``last``, ``h:{hour}``, ``w:{dow}``, ``g:{genre}``), the recent-items list and the seen set;
per item: a hash of counters. Every one of them expires ``online_user_ttl_s`` / ``online_item_ttl_s``
after its last event (a user who comes back later is a cold user again, as far as the overlay goes).

Windowed counts decay by day buckets (``day`` = unix days of the *event* time): the 7d count is the
sum of the last 7 day buckets as of the *read* time, so counts fall as days pass, without a rebuild.
Buckets older than ``keep_days`` are pruned lazily by the script (once per key per day).
The offline build reads the dataset, not the stream, so batch rows and overlay never count one
event twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from recsys.features.keys import OverlayKeys, cache_generation_key
from recsys.features.schema import DAYS_OF_WEEK, EVENT_NAMES, HOUR_BUCKETS, WINDOWS, smoothed_rate

KEEP_DAYS = 31  # longest window (30d) + today


READ_ITEMS_SCRIPT = """
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGETALL', k) end
return out
"""
"""The overlay hashes of N items in one command (the read path fetches 500 candidates per request: one
EVAL costs far less than 500 HGETALLs on the wire, and most candidates have no overlay). One Redis node
only: on a Cluster the keys span slots, and the reader pipelines HGETALLs instead."""


def event_args(stream_id: str, rec: Mapping, genres: Sequence[int], weight: float, today: int) -> list[str]:
    """The 12 script values of one event (ids, counter names, day bucket, time slots, genre weights, dedupe flag).

    A client-supplied ``event_id`` sets the dedupe flag: the same event sent twice (a retry after a 503
    whose append had in fact reached Redis) is applied once within 24 h (marker
    :meth:`~recsys.features.keys.OverlayKeys.event_marker`). Generated ids never repeat: no marker.
    """
    ts = float(rec["ts"])
    day = int(ts // 86400)
    hour = int(((int(ts) // 3600) % 24) // (24 // HOUR_BUCKETS))
    dow = int((int(ts) // 86400 + 3) % 7)
    rating = rec.get("rating")
    return [stream_id, str(int(rec["user_id"])), str(int(rec["item_id"])), EVENT_NAMES[rec["event_type"]],
            str(day) if today - day <= KEEP_DAYS else "", repr(ts), "" if rating is None else repr(float(rating)),
            str(hour), str(dow), repr(float(weight)), ",".join(str(int(g)) for g in genres),
            "1" if rec.get("client_event_id") else ""]


def event_keys(keys: OverlayKeys, rec: Mapping, cache_prefix: str) -> list[str]:
    """The 6 keys of one event in :data:`~recsys.features.stream_scripts.APPLY_SCRIPT` (all named, used or not)."""
    user, item = int(rec["user_id"]), int(rec["item_id"])
    marker = keys.event_marker(user, str(rec.get("event_id") or ""))
    gen = cache_generation_key(cache_prefix, user) if cache_prefix else keys.user(user)
    return [keys.user(user), keys.recent(user), keys.seen_live(user), keys.item(item), marker, gen]


# ------------------------------------------------------------------ reading
def _decode(h: Mapping | Sequence) -> dict[str, str]:
    """An HGETALL reply (dict, or the flat [field, value, ...] list a Lua script returns) -> str dict."""
    if isinstance(h, list | tuple):
        h = dict(zip(h[::2], h[1::2], strict=True))
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (h or {}).items()}


def window_counts(h: Mapping[str, str], today: int) -> dict[tuple[str, str], float]:
    """{(plural, window suffix): count} of one overlay hash as of ``today`` (unix days)."""
    out: dict[tuple[str, str], float] = {}
    for f, v in h.items():
        if not f.startswith("c:"):
            continue
        _, plural, bucket = f.split(":", 2)
        n = float(v)
        if bucket == "all":
            out[(plural, "all")] = out.get((plural, "all"), 0.0) + n
            continue
        age = today - int(bucket)
        for suffix, days in WINDOWS:
            if days is not None and 0 <= age < days:
                out[(plural, suffix)] = out.get((plural, suffix), 0.0) + n
    return out


def merge_user(user: dict, raw_hash: Mapping, raw_recent: Sequence, recent_n: int, now: float | None = None) -> bool:
    """Add the overlay to a user feature dict in place; True when the user has any real-time event."""
    h = _decode(raw_hash)
    if not h and not raw_recent:
        return False
    today = int((time.time() if now is None else now) // 86400)
    batch_ratings = float(user.get("user_ratings_all") or 0.0)
    for (plural, suffix), n in window_counts(h, today).items():
        name = f"user_{plural}_{suffix}"
        user[name] = float(user.get(name) or 0.0) + n
    rn = float(h.get("c:ratings:all", 0.0))
    if rn:
        total = float(user.get("user_avg_rating") or 0.0) * batch_ratings + float(h.get("rsum", 0.0))
        user["user_avg_rating"] = total / (batch_ratings + rn)
    user["user_last_event_at"] = max(float(user.get("user_last_event_at") or 0.0), float(h.get("last", 0.0)))
    recent = [int(str(x.decode() if isinstance(x, bytes) else x).split(":", 1)[0]) for x in raw_recent or []]
    merged = list(dict.fromkeys([*recent, *(int(x) for x in user.get("user_recent_item_ids") or [])]))
    user["user_recent_item_ids"] = merged[:recent_n]
    gw = np.asarray(user.get("user_genre_weights") or [], dtype=np.float64)
    extra = {int(f[2:]): float(v) for f, v in h.items() if f.startswith("g:")}
    if extra:
        gw = np.pad(gw, (0, max(0, max(extra) + 1 - len(gw))))
        for g, w in extra.items():
            gw[g] += w
        user["user_genre_weights"] = gw.astype(np.float32).tolist()
        top = np.argsort(-gw, kind="stable")[:3]
        user["user_top_genres"] = [int(i) for i in top if gw[i] > 0]
    for name, tag, width in (("user_hour_counts", "h:", HOUR_BUCKETS), ("user_dow_counts", "w:", DAYS_OF_WEEK)):
        counts = [float(x) for x in (list(user.get(name) or []) + [0.0] * width)[:width]]
        for f, v in h.items():
            if f.startswith(tag) and 0 <= int(f[2:]) < width:
                counts[int(f[2:])] += float(v)
        user[name] = counts
    return True


def merge_items(cols: dict, missing: np.ndarray, raw_hashes: Sequence[Mapping], now: float | None = None) -> None:
    """Add the overlay to item feature columns in place (counts, rates, average rating)."""
    today = int((time.time() if now is None else now) // 86400)
    for j, raw in enumerate(raw_hashes):
        h = _decode(raw)
        if not h:
            continue
        missing[j] = False
        batch_ratings = float(cols["item_ratings_all"][j]) if "item_ratings_all" in cols else 0.0
        for (plural, suffix), n in window_counts(h, today).items():
            name = f"item_{plural}_{suffix}"
            if name in cols:
                cols[name][j] += n
        if "item_ctr_30d" in cols and "item_clicks_30d" in cols and "item_views_30d" in cols:
            cols["item_ctr_30d"][j] = smoothed_rate(cols["item_clicks_30d"][j], cols["item_views_30d"][j])
        if "item_cvr_30d" in cols and "item_purchases_30d" in cols and "item_clicks_30d" in cols:
            cols["item_cvr_30d"][j] = smoothed_rate(cols["item_purchases_30d"][j], cols["item_clicks_30d"][j])
        rn = float(h.get("c:ratings:all", 0.0))
        if rn and "item_avg_rating" in cols:
            total = float(cols["item_avg_rating"][j]) * batch_ratings + float(h.get("rsum", 0.0))
            cols["item_avg_rating"][j] = total / (batch_ratings + rn)
