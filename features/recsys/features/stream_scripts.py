"""The Lua scripts of the event stream: append with a cap, apply to the overlay, dead-letter, replay.

Each script starts with ``#!lua`` (Redis 7 script flags; none given = a write script): Redis then refuses
the whole call up front when it is out of memory (``maxmemory`` + ``noeviction``), instead of failing a
write half-way through a batch; the caller retries later (HTTP 503 + Retry-After for appends).

Every script names every key it touches in KEYS (Redis Cluster routes a script by its keys, and a
script touching an undeclared key on another node fails there). Key names come from
:mod:`recsys.features.keys`; the hash tags there put the keys of one call in one slot:

* :data:`APPEND_SCRIPT`, :data:`DEAD_LETTER_SCRIPT`, :data:`REPLAY_SCRIPT`, :data:`ACK_SCRIPT`: the stream
  and its side keys (dead letters, invalidation queue) share the tag ``{<project>:events}``.
* :data:`APPLY_SCRIPT` (one Redis node): a whole batch in one call, XACK first so that a re-delivered
  entry is never counted twice (the reply of XACK says whether this is its first application).
* :data:`APPLY_USER_SCRIPT` / :data:`APPLY_ITEM_SCRIPT` (Redis Cluster): one call per user and per item
  of a batch, each in its entity's slot; XACK comes last (:data:`ACK_SCRIPT`). Exactly-once then rests
  on per-entity markers of applied stream ids (``:ap`` sorted sets, kept ``apply_window_s``).
"""

from __future__ import annotations

TOUCHED_KEEP_S = 3600  # how far back P:touched remembers items (readers poll it every few seconds)

_EFFECTS = """#!lua
local function count(k, plural, day, rating)
  redis.call('HINCRBY', k, 'c:' .. plural .. ':all', 1)
  if day ~= '' then redis.call('HINCRBY', k, 'c:' .. plural .. ':' .. day, 1) end
  if rating ~= '' then redis.call('HINCRBYFLOAT', k, 'rsum', rating) end
end
local function user_effects(uk, rk, sk, item, ts, hour, dow, weight, genres, recent_n, seen_cap)
  local last = tonumber(redis.call('HGET', uk, 'last') or '0')
  if tonumber(ts) > last then redis.call('HSET', uk, 'last', ts) end
  redis.call('HINCRBY', uk, 'h:' .. hour, 1)
  redis.call('HINCRBY', uk, 'w:' .. dow, 1)
  if genres ~= '' then
    for g in string.gmatch(genres, '[^,]+') do redis.call('HINCRBYFLOAT', uk, 'g:' .. g, weight) end
  end
  redis.call('LPUSH', rk, item .. ':' .. ts)
  redis.call('LTRIM', rk, 0, recent_n - 1)
  if seen_cap > 0 then
    if redis.call('APPEND', sk, item .. ',') > seen_cap * 24 then
      -- keep the newest ids: cut after the first separator in the last 12 * seen_cap + 21 bytes
      -- (an int64 id and its comma take at most 21 bytes, so that range always holds a separator)
      local tail = redis.call('GETRANGE', sk, -(seen_cap * 12 + 21), -1)
      local cut = string.find(tail, ',', 1, true)
      redis.call('SET', sk, string.sub(tail, cut + 1))
    end
  end
end
local function prune(k, today, keep_days)
  if redis.call('HGET', k, 'pruned') ~= tostring(today) then
    for _, f in ipairs(redis.call('HKEYS', k)) do
      local d = string.match(f, '^c:%a+:(%d+)$')
      if d and tonumber(d) < today - keep_days then redis.call('HDEL', k, f) end
    end
    redis.call('HSET', k, 'pruned', today)
  end
end
local function expire(k, ttl)
  if ttl > 0 and redis.call('EXISTS', k) == 1 then redis.call('EXPIRE', k, ttl) end
end
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
"""

APPLY_SCRIPT = _EFFECTS + """
local stream, touched_key = KEYS[1], KEYS[2]
local group = ARGV[1]
local recent_n, today, keep_days = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local gen_on, gen_ttl, seen_cap = ARGV[5] == '1', tonumber(ARGV[6]), tonumber(ARGV[7])
local user_ttl, marker_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
local item_ttl, inv_on = tonumber(ARGV[10]), ARGV[11] == '1'
local inv_key = KEYS[3]
local F, K = 12, 6
local applied, users, items = 0, {}, {}
local now = now_ms()
local i, j = 12, 4
while i + F - 1 <= #ARGV do
  local id, user, item, plural, day, ts, rating, hour, dow, weight, genres, dedupe = unpack(ARGV, i, i + F - 1)
  local uk, rk, sk, ik, mk, gk = unpack(KEYS, j, j + K - 1)
  i, j = i + F, j + K
  local fresh = redis.call('XACK', stream, group, id) == 1
  if fresh and dedupe == '1' then
    fresh = redis.call('SET', mk, '1', 'NX', 'EX', marker_ttl) ~= false
  end
  if fresh then
    count(uk, plural, day, rating)
    count(ik, plural, day, rating)
    user_effects(uk, rk, sk, item, ts, hour, dow, weight, genres, recent_n, seen_cap)
    redis.call('ZADD', touched_key, now, item)
    if gen_on then
      redis.call('INCR', gk)
      redis.call('EXPIRE', gk, gen_ttl)
    end
    if inv_on then redis.call('SADD', inv_key, user) end
    users[uk] = {rk, sk}
    items[ik] = true
    applied = applied + 1
  end
end
for uk, rest in pairs(users) do
  prune(uk, today, keep_days)
  expire(uk, user_ttl)
  expire(rest[1], user_ttl)
  expire(rest[2], user_ttl)
end
for ik, _ in pairs(items) do
  prune(ik, today, keep_days)
  expire(ik, item_ttl)
end
if applied > 0 then redis.call('ZREMRANGEBYSCORE', touched_key, '-inf', now - TOUCHED_KEEP_MS) end
return applied
""".replace("TOUCHED_KEEP_MS", str(TOUCHED_KEEP_S * 1000))
"""KEYS = stream, touched, invalidation queue, then 6 per event: user hash, recent list, live seen set, item
hash, client-event-id marker, cache generation (unused keys are still named: Cluster routes by them).
ARGV = group, recent_n, today, keep_days, gen_on, gen_ttl, seen_cap, user_ttl, marker_ttl, item_ttl, inv_on, then 12
values per event (:func:`recsys.features.realtime.event_args`). Returns how many entries were new."""

APPLY_USER_SCRIPT = _EFFECTS + """
local uk, rk, sk, ap, gk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local recent_n, today, keep_days = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gen_on, gen_ttl, seen_cap = ARGV[4] == '1', tonumber(ARGV[5]), tonumber(ARGV[6])
local user_ttl, marker_ttl, window_ms = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local F = 12
local now = now_ms()
local keep = {0}
local applied = false
local i, j = 10, 6
while i + F - 1 <= #ARGV do
  local id, user, item, plural, day, ts, rating, hour, dow, weight, genres, dedupe = unpack(ARGV, i, i + F - 1)
  local mk = KEYS[j]
  i, j = i + F, j + 1
  local dup = false
  if dedupe == '1' then
    local owner = redis.call('GET', mk)
    if owner and owner ~= id then dup = true elseif not owner then redis.call('SET', mk, id, 'EX', marker_ttl) end
  end
  if not dup then
    keep[#keep + 1] = id
    if redis.call('ZADD', ap, 'NX', now, id) == 1 then
      count(uk, plural, day, rating)
      user_effects(uk, rk, sk, item, ts, hour, dow, weight, genres, recent_n, seen_cap)
      if gen_on then
        redis.call('INCR', gk)
        redis.call('EXPIRE', gk, gen_ttl)
      end
      applied = true
      keep[1] = keep[1] + 1
    end
  end
end
redis.call('ZREMRANGEBYSCORE', ap, '-inf', now - window_ms)
redis.call('PEXPIRE', ap, window_ms)
if applied then
  prune(uk, today, keep_days)
  expire(uk, user_ttl)
  expire(rk, user_ttl)
  expire(sk, user_ttl)
end
return keep
"""
"""Cluster mode, one user: KEYS = user hash, recent, live seen, applied markers, cache generation, then one
client-event-id marker per event. Returns {number newly applied, the stream ids that are not repeats of a
client event id...}."""

APPLY_ITEM_SCRIPT = _EFFECTS + """
local ik, ap = KEYS[1], KEYS[2]
local today, keep_days, item_ttl, window_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local applied = 0
local i = 5
while i + 3 <= #ARGV do
  local id, plural, day, rating = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('ZADD', ap, 'NX', now, id) == 1 then
    count(ik, plural, day, rating)
    applied = applied + 1
  end
end
redis.call('ZREMRANGEBYSCORE', ap, '-inf', now - window_ms)
redis.call('PEXPIRE', ap, window_ms)
if applied > 0 then
  prune(ik, today, keep_days)
  expire(ik, item_ttl)
end
return applied
"""
"""Cluster mode, one item: KEYS = item hash, applied markers; ARGV = today, keep_days, ttl, window, then
(stream id, plural, day, rating) per event."""

ACK_SCRIPT = """#!lua
local n = tonumber(ARGV[2])
local acked = 0
for i = 3, 2 + n do acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) end
for i = 3 + n, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return acked
"""
"""Cluster mode: KEYS = stream, invalidation queue; ARGV = group, number of stream ids, the stream ids, then
the user ids owed a result-cache invalidation (queued in the same step as the acknowledgement)."""

APPEND_SCRIPT = """#!lua
local stream, group, cap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local n = #ARGV - 2
if cap > 0 and redis.call('XLEN', stream) + n > cap then
  -- make room by dropping applied entries only: everything before the first unapplied one
  local first = nil
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if ok then
    for _, g in ipairs(groups) do
      local info = {}
      for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
      if info['name'] == group then
        local p = redis.call('XPENDING', stream, group)
        if tonumber(p[1]) > 0 then
          first = p[2]
        else
          local ms, seq = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
          first = ms .. '-' .. (tonumber(seq) + 1)
        end
      end
    end
  end
  if first then redis.call('XTRIM', stream, 'MINID', first) end
  if redis.call('XLEN', stream) + n > cap then
    return redis.error_reply('STREAMFULL event stream holds ' .. redis.call('XLEN', stream) ..
      ' unapplied entries (cap ' .. cap .. ')')
  end
end
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = redis.call('XADD', stream, '*', 'e', ARGV[i]) end
return ids
"""
"""KEYS = stream; ARGV = group, cap (0 = none), then the JSON records. All or nothing: a call that does not
fit under the cap after dropping applied entries is refused with STREAMFULL (HTTP 503), never trimmed into
unapplied entries."""

DEAD_LETTER_SCRIPT = """#!lua
local stream, dlq, group = KEYS[1], KEYS[2], ARGV[1]
local moved = 0
local i = 3
while i + 3 <= #ARGV do
  local id, payload, err, deliveries = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('XACK', stream, group, id) == 1 then
    redis.call('XADD', dlq, 'MAXLEN', '~', ARGV[2], '*', 'source_id', id, 'e', payload, 'error', err,
               'deliveries', deliveries)
    moved = moved + 1
  end
end
return moved
"""
"""KEYS = stream, dead-letter stream; ARGV = group, dead-letter cap, then (id, payload, error, deliveries)
per entry. Acknowledge and move in one step: an entry is either pending or dead-lettered, never lost."""

REPLAY_SCRIPT = """#!lua
local stream, dlq = KEYS[1], KEYS[2]
local out = {}
for i = 1, #ARGV do
  local e = redis.call('XRANGE', dlq, ARGV[i], ARGV[i])
  if #e == 1 then
    local f = e[1][2]
    local payload = nil
    for k = 1, #f, 2 do if f[k] == 'e' then payload = f[k + 1] end end
    out[#out + 1] = redis.call('XADD', stream, '*', 'e', payload or '', 'replayed_from', ARGV[i])
    redis.call('XDEL', dlq, ARGV[i])
  else
    out[#out + 1] = ''
  end
end
return out
"""
"""KEYS = stream, dead-letter stream; ARGV = dead-letter ids. Re-append and delete in one step; '' for an id
that is not (or no longer) a dead letter."""
