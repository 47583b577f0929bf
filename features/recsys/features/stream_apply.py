"""Apply a batch of checked stream entries to the overlay: one script on one node, per-slot scripts on a Cluster.

Why two paths: on one Redis node one script can XACK and apply a whole batch atomically, which makes a
re-delivered entry a no-op for free (XACK says whether it was still pending). On a Redis Cluster a
user's keys, an item's keys and the stream live on different nodes, and a script may only touch one
slot: each user's and each item's effects run in their own script call, guarded by per-entity markers
of applied stream ids (kept ``apply_window_s``), and the XACK comes last. A crash in between leaves the
entry pending; its re-delivery skips the parts already applied. The script calls of a batch go through one
cluster pipeline per phase (users, then items): one round trip per node, not one per entity.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from recsys.features.config import FeatureStoreConfig
from recsys.features.keys import GROUP, OverlayKeys, cache_generation_key
from recsys.features.realtime import KEEP_DAYS, event_args, event_keys
from recsys.features.stream_scripts import (
    ACK_SCRIPT,
    APPLY_ITEM_SCRIPT,
    APPLY_SCRIPT,
    APPLY_USER_SCRIPT,
    TOUCHED_KEEP_S,
)
from recsys.platform.data.schema import EVENT_WEIGHTS

_TRANSIENT_PREFIXES = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED",
                       "ASK", "NOREPLICAS", "MISCONF", "NOSCRIPT")


def is_transient(e: BaseException) -> bool:
    """Redis is unavailable or refusing writes (retry the same batch), as opposed to an entry that fails."""
    import redis

    from recsys.features.errors import FeatureStoreUnavailable

    if isinstance(e, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError | OSError
                  | FeatureStoreUnavailable):
        return True
    if isinstance(e, redis.exceptions.ResponseError):
        return str(e).startswith(_TRANSIENT_PREFIXES)
    return isinstance(e, redis.exceptions.RedisClusterException)


class BatchApplier:
    """Turns (stream id, record) pairs into overlay writes; ``apply`` returns how many were new."""

    def __init__(self, cfg: FeatureStoreConfig, client, keys: OverlayKeys, stream_cfg, cache_prefix: str = "",
                 cache_ttl_s: int = 7 * 86400, queue_invalidations: bool = False):
        self.cfg = cfg
        self.redis = client
        self.keys = keys
        self.stream_cfg = stream_cfg
        self.cache_prefix = cache_prefix
        self.cache_ttl_s = int(cache_ttl_s)
        self.queue_invalidations = queue_invalidations
        self.cluster = cfg.is_cluster
        self._batch = client.register_script(APPLY_SCRIPT)
        self._user = client.register_script(APPLY_USER_SCRIPT)
        self._item = client.register_script(APPLY_ITEM_SCRIPT)
        self._ack = client.register_script(ACK_SCRIPT)
        self._genres: dict[int, list[int]] = {}
        self._reader = None

    def close(self) -> None:
        """Close the genre reader's Redis client (opened on first use)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _item_genres(self, items: Sequence[int]) -> dict[int, list[int]]:
        """Genre indices of each item (from Feast's item_profile row; unknown items have none), cached."""
        todo = [i for i in dict.fromkeys(items) if i not in self._genres]
        if todo:
            if self._reader is None:
                from recsys.features.online import OnlineFeatureClient

                self._reader = OnlineFeatureClient(self.cfg, item_features=["item_genre_multihot"])
            cols, _ = self._reader.read_item_columns(todo)
            for i, mh in zip(todo, cols["item_genre_multihot"], strict=True):
                self._genres[i] = [g for g, v in enumerate(mh or []) if v > 0]
            if len(self._genres) > 200_000:
                self._genres.clear()
        return {i: self._genres.get(i, []) for i in items}

    def _event_args(self, entries: list[tuple[str, dict]], today: int) -> list[list[str]]:
        genres = self._item_genres([int(r["item_id"]) for _, r in entries])
        out = []
        for sid, r in entries:
            w = EVENT_WEIGHTS[r["event_type"]] * (float(r["rating"]) / 5.0 if r.get("rating") is not None else 1.0)
            out.append(event_args(sid, r, genres[int(r["item_id"])], w, today))
        return out

    def _common(self) -> list:
        return [self.cfg.recent_items, None, KEEP_DAYS, "1" if self.cache_prefix else "0", self.cache_ttl_s,
                self.cfg.seen_items, self.cfg.online_user_ttl_s, self.cfg.event_id_ttl_s]

    def apply(self, entries: list[tuple[str, dict]]) -> int:
        today = int(time.time() // 86400)
        per_event = self._event_args(entries, today)
        if self.cluster:
            return self._apply_cluster(entries, per_event, today)
        keys = [self.keys.stream, self.keys.touched, self.keys.invalidations]
        common = self._common()
        common[1] = today
        args: list = [GROUP, *common, self.cfg.online_item_ttl_s, "1" if self.queue_invalidations else "0"]
        for (_, r), ea in zip(entries, per_event, strict=True):
            keys += event_keys(self.keys, r, self.cache_prefix)
            args += ea
        return int(self._batch(keys=keys, args=args))

    def _pipelined(self, script, calls: list[tuple[list, list]]) -> list:
        """One EVALSHA per (keys, args), all sent through one cluster pipeline: redis-py groups them by node and
        sends each node its commands in one round trip (the nodes in parallel), instead of one round trip per
        user or item. A node that lost its scripts (restart, failover) answers NOSCRIPT: the script is loaded
        on every primary and the calls are sent again - safe, each call skips the stream ids its entity's
        ``:ap`` markers already hold."""
        import redis

        for attempt in range(2):
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        # execute_command (ClusterPipeline blocks its evalsha() method) with the node from the
                        # local slot table: without it redis-py asks a server for the keys (COMMAND GETKEYS),
                        # one extra round trip per call
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args,
                                             target_nodes=self.redis.get_node_from_key(keys[0]))
                    return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.redis.script_load(script.script)
        return []  # not reached

    def _apply_cluster(self, entries: list[tuple[str, dict]], per_event: list[list[str]], today: int) -> int:
        by_user: dict[int, list[int]] = {}
        for j, (_, r) in enumerate(entries):
            by_user.setdefault(int(r["user_id"]), []).append(j)
        common = self._common()
        common[1] = today
        window_ms = self.stream_cfg.apply_window_s * 1000
        calls = []
        for user, idx in by_user.items():
            gen = cache_generation_key(self.cache_prefix, user) if self.cache_prefix else self.keys.user(user)
            keys = [self.keys.user(user), self.keys.recent(user), self.keys.seen_live(user),
                    self.keys.user_applied(user), gen,
                    *(self.keys.event_marker(user, str(entries[j][1].get("event_id") or "")) for j in idx)]
            calls.append((keys, [*common, window_ms, *(a for j in idx for a in per_event[j])]))
        outs = self._pipelined(self._user, calls)
        applied = sum(int(out[0]) for out in outs)
        keep = {s.decode() if isinstance(s, bytes) else str(s) for out in outs for s in out[1:]}
        by_item: dict[int, list[int]] = {}
        for j, (sid, r) in enumerate(entries):
            if sid in keep:
                by_item.setdefault(int(r["item_id"]), []).append(j)
        calls = []
        for item, idx in by_item.items():
            args = [today, KEEP_DAYS, self.cfg.online_item_ttl_s, window_ms]
            for j in idx:
                ea = per_event[j]
                args += [ea[0], ea[3], ea[4], ea[6]]  # stream id, plural, day, rating
            calls.append(([self.keys.item(item), self.keys.item_applied(item)], args))
        self._pipelined(self._item, calls)
        if by_item:
            sec, usec = self.redis.time()
            now_ms = int(sec) * 1000 + int(usec) // 1000
            with self.redis.pipeline(transaction=False) as pipe:  # one key: one node, one round trip
                pipe.zadd(self.keys.touched, {str(item): now_ms for item in by_item})
                pipe.zremrangebyscore(self.keys.touched, "-inf", now_ms - TOUCHED_KEEP_S * 1000)
                pipe.execute()
        sids = [sid for sid, _ in entries]
        users = sorted({int(entries[j][1]["user_id"]) for j in range(len(entries)) if entries[j][0] in keep}) \
            if self.queue_invalidations else []
        self._ack(keys=[self.keys.stream, self.keys.invalidations], args=[GROUP, len(sids), *sids, *users])
        return applied
