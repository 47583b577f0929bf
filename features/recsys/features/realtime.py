"""Real-time overlay: what events since the last batch build added to a user's and an item's features.

Why an overlay instead of rewriting Feast's rows: Feast stores each feature as a serialized protobuf,
so an increment is a read-modify-write, and two writers of the same user lose updates. The overlay is
plain Redis counters next to Feast's rows, changed only by one Lua script (:data:`APPLY_SCRIPT`) that
the stream consumer runs per batch, so every increment is atomic, a batch is all-or-nothing, and a
re-delivered stream entry is never counted twice (the script XACKs each entry first and skips it when
the entry was already acknowledged). Readers (:class:`~recsys.features.online.OnlineFeatureClient`)
add the overlay to the batch row on every read.

Layout, all under ``recsys:rt:{project}`` (``P``)::

    P:events            stream of accepted events (consumer group "online")
    P:u:{user}          hash: c:{clicks|views|...}:{day|all} counts, rsum, last, h:{hour}, w:{dow}, g:{genre}
    P:u:{user}:r        list "item:ts", most recent first (LTRIM'd to recent_items)
    P:u:{user}:s        string "item,item,...," of every applied event's item (trimmed to seen_items);
                        P:u:{user}:sb is the batch part written by materialize (:mod:`recsys.features.seen`)
    P:i:{item}          hash: c:{...}:{day|all} counts, rsum
    P:touched           sorted set item -> Redis server time (ms) of its last applied event, last hour only:
                        readers holding item rows in memory re-read just these (serving's item snapshot)
    P:seen:{event_id}   marker of a client-supplied event id (24 h): a retried event counts once

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

from recsys.features.schema import DAYS_OF_WEEK, EVENT_NAMES, HOUR_BUCKETS, WINDOWS, smoothed_rate

KEEP_DAYS = 31  # longest window (30d) + today
TOUCHED_KEEP_S = 3600  # how far back P:touched remembers items (readers poll it every few seconds)

APPLY_SCRIPT = """
local stream, group, prefix = KEYS[1], ARGV[1], ARGV[2]
local recent_n = tonumber(ARGV[3])
local today = tonumber(ARGV[4])
local keep_days = tonumber(ARGV[5])
local gen_prefix = ARGV[6]
local gen_ttl = tonumber(ARGV[7])
local seen_cap = tonumber(ARGV[8])
local F = 12
local applied = 0
local touched = {}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local i = 9
while i + F - 1 <= #ARGV do
  local id, user, item, plural, day, ts, rating, hour, dow, weight, genres, dedupe = unpack(ARGV, i, i + F - 1)
  i = i + F
  local fresh = redis.call('XACK', stream, group, id) == 1
  if fresh and dedupe ~= '' then
    fresh = redis.call('SET', prefix .. ':seen:' .. dedupe, '1', 'NX', 'EX', 86400) ~= false
  end
  if fresh then
    local uk = prefix .. ':u:' .. user
    local ik = prefix .. ':i:' .. item
    for _, k in ipairs({uk, ik}) do
      redis.call('HINCRBY', k, 'c:' .. plural .. ':all', 1)
      if day ~= '' then redis.call('HINCRBY', k, 'c:' .. plural .. ':' .. day, 1) end
      if rating ~= '' then redis.call('HINCRBYFLOAT', k, 'rsum', rating) end
      touched[k] = true
    end
    local last = tonumber(redis.call('HGET', uk, 'last') or '0')
    if tonumber(ts) > last then redis.call('HSET', uk, 'last', ts) end
    redis.call('HINCRBY', uk, 'h:' .. hour, 1)
    redis.call('HINCRBY', uk, 'w:' .. dow, 1)
    if genres ~= '' then
      for g in string.gmatch(genres, '[^,]+') do redis.call('HINCRBYFLOAT', uk, 'g:' .. g, weight) end
    end
    redis.call('ZADD', prefix .. ':touched', now, item)
    redis.call('LPUSH', uk .. ':r', item .. ':' .. ts)
    redis.call('LTRIM', uk .. ':r', 0, recent_n - 1)
    if seen_cap > 0 then
      local sk = uk .. ':s'
      if redis.call('APPEND', sk, item .. ',') > seen_cap * 24 then
        -- keep the newest ids: cut after the first separator in the last 12 * seen_cap + 21 bytes
        -- (an int64 id and its comma take at most 21 bytes, so that range always holds a separator)
        local tail = redis.call('GETRANGE', sk, -(seen_cap * 12 + 21), -1)
        local cut = string.find(tail, ',', 1, true)
        redis.call('SET', sk, string.sub(tail, cut + 1))
      end
    end
    if gen_prefix ~= '' then
      local gk = gen_prefix .. user
      redis.call('INCR', gk)
      redis.call('EXPIRE', gk, gen_ttl)
    end
    applied = applied + 1
  end
end
for k, _ in pairs(touched) do
  if redis.call('HGET', k, 'pruned') ~= tostring(today) then
    for _, f in ipairs(redis.call('HKEYS', k)) do
      local d = string.match(f, '^c:%a+:(%d+)$')
      if d and tonumber(d) < today - keep_days then redis.call('HDEL', k, f) end
    end
    redis.call('HSET', k, 'pruned', today)
  end
end
if applied > 0 then redis.call('ZREMRANGEBYSCORE', prefix .. ':touched', '-inf', now - TOUCHED_KEEP_S * 1000) end
return applied
""".replace("TOUCHED_KEEP_S", str(TOUCHED_KEEP_S))
"""KEYS[1] = stream; ARGV = group, prefix, recent_n, today, keep_days, cache-generation prefix ('' = none),
generation TTL, seen_items cap (0 = keep no seen set), then 12 values per event (see :func:`event_args`).

The seen string is trimmed by bytes, not ids (ids vary in length): when it passes ``24 * cap`` bytes
it keeps the last ``12 * cap`` bytes from a separator on, i.e. roughly the newest ``cap`` ids for
typical ids; amortised O(1) per event."""


READ_ITEMS_SCRIPT = """
local out = {}
for i, k in ipairs(KEYS) do out[i] = redis.call('HGETALL', k) end
return out
"""
"""The overlay hashes of N items in one command (the read path fetches 500 candidates per request: one
EVAL costs far less than 500 HGETALLs on the wire, and most candidates have no overlay)."""


class OverlayKeys:
    """Redis key names of one Feast project's overlay and event stream."""

    def __init__(self, project: str):
        self.prefix = f"recsys:rt:{project}"
        self.stream = f"{self.prefix}:events"

    def user(self, user_id: int) -> str:
        return f"{self.prefix}:u:{int(user_id)}"

    def recent(self, user_id: int) -> str:
        return f"{self.prefix}:u:{int(user_id)}:r"

    def seen_batch(self, user_id: int) -> str:
        """Every item of the user as of the last materialization (:mod:`recsys.features.seen`)."""
        return f"{self.prefix}:u:{int(user_id)}:sb"

    def seen_live(self, user_id: int) -> str:
        """Items of the user's events applied since (the apply script appends)."""
        return f"{self.prefix}:u:{int(user_id)}:s"

    def item(self, item_id: int) -> str:
        return f"{self.prefix}:i:{int(item_id)}"

    @property
    def touched(self) -> str:
        return f"{self.prefix}:touched"


def event_args(stream_id: str, rec: Mapping, genres: Sequence[int], weight: float, today: int) -> list[str]:
    """The 12 script values of one event (ids, counter names, day bucket, time slots, genre weights, dedupe id).

    A client-supplied ``event_id`` is the dedupe id: the same event sent twice (a retry after a 503 whose
    append had in fact reached Redis) is applied once within 24 h. Generated ids never repeat: no marker.
    """
    ts = float(rec["ts"])
    day = int(ts // 86400)
    hour = int(((int(ts) // 3600) % 24) // (24 // HOUR_BUCKETS))
    dow = int((int(ts) // 86400 + 3) % 7)
    rating = rec.get("rating")
    return [stream_id, str(int(rec["user_id"])), str(int(rec["item_id"])), EVENT_NAMES[rec["event_type"]],
            str(day) if today - day <= KEEP_DAYS else "", repr(ts), "" if rating is None else repr(float(rating)),
            str(hour), str(dow), repr(float(weight)), ",".join(str(int(g)) for g in genres),
            str(rec["event_id"]) if rec.get("client_event_id") else ""]


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
