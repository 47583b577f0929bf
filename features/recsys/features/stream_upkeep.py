"""Keeping the event stream and its consumer group bounded: trim applied entries, drop dead consumer names.

Why a module of its own: these run every ``max(1, min(30, retention_s / 2))`` s from the consumer loop
(:class:`~recsys.features.stream_consumer.StreamConsumer`), apart from applying entries, and they are
what keeps the stream's length and the group's consumer list from growing with time (issue 22):

* :func:`trim` drops acknowledged entries older than ``retention_s``, never an unapplied one (the trim
  stops at the smallest pending id, or just after the last delivered one);
* :func:`delete_dead_consumers` removes consumer names of replicas that went away (idle
  ``dead_consumer_idle_ms`` with nothing pending; names holding entries are first reclaimed by XAUTOCLAIM);
* :func:`backlog` is what is not applied yet (pending + not yet delivered), the consumer's lag.
"""

from __future__ import annotations

import time

from recsys.features.keys import GROUP, OverlayKeys


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _group(client, keys: OverlayKeys) -> dict | None:
    return next((g for g in client.xinfo_groups(keys.stream) if _s(g["name"]) == GROUP), None)


def trim(client, keys: OverlayKeys, retention_s: float) -> None:
    """Drop applied entries older than ``retention_s`` (never an unapplied one)."""
    g = _group(client, keys)
    if g is None:
        return
    safe = _s(g["last-delivered-id"])
    pending = client.xpending(keys.stream, GROUP)
    if pending and pending.get("pending"):
        safe = _s(pending["min"])
    else:
        ms, seq = (int(x) for x in safe.split("-"))
        safe = f"{ms}-{seq + 1}"
    cutoff = int((time.time() - retention_s) * 1000)
    min_id = min((int(safe.split("-")[0]), int(safe.split("-")[1])), (cutoff, 0))
    if min_id[0] > 0:
        client.xtrim(keys.stream, minid=f"{min_id[0]}-{min_id[1]}", approximate=True)


def delete_dead_consumers(client, keys: OverlayKeys, me: str, idle_ms: int) -> int:
    """XGROUP DELCONSUMER every consumer but ``me`` idle ``idle_ms`` with nothing pending; returns how many."""
    deleted = 0
    for c in client.xinfo_consumers(keys.stream, GROUP):
        name = _s(c["name"])
        if name != me and int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms:
            client.xgroup_delconsumer(keys.stream, GROUP, name)
            deleted += 1
    return deleted


def backlog(client, keys: OverlayKeys) -> int:
    """Entries not yet applied: pending in the group plus not yet delivered (Redis >= 7 'lag')."""
    g = _group(client, keys)
    if g is None:
        return 0
    return int(g.get("pending") or 0) + int(g.get("lag") or 0)
