"""Every Redis key name of the real-time path, in one place (overlay, seen sets, stream, result-cache generation).

Why one module: the stream consumer's Lua script writes these keys, the online reader and serving's
feature client read them, materialization writes the seen sets and the result cache bumps the
generation counter; a key built by hand in any of them drifts from the others. Import from here.

Redis Cluster: a Lua script (or a MULTI, or an MGET) may only touch keys of one hash slot, and Redis
computes the slot from the part of the key between the first ``{`` and the next ``}`` (the hash tag).
So every key of one user carries the tag ``{u:<id>}`` and every key of one item ``{i:<id>}``: one
script call per user (or item) then touches one slot. The stream, its dead-letter stream and the
invalidation queue share the tag ``{<project>:events}``. The tag is the same in every project and in
the result cache, so a user's overlay and cached answers sit on one node.

Layout (``P`` = ``recsys:rt:<project>``)::

    P:{<project>:events}          stream of accepted events (consumer group "online")
    P:{<project>:events}:dlq      dead letters: entries that could not be applied, with their error
    P:{<project>:events}:inv      users whose result-cache invalidation is still owed (retried queue)
    P:{u:<user>}                  hash: counters, time slots, genre weights (realtime.py)
    P:{u:<user>}:r                list of recent "item:ts"
    P:{u:<user>}:s / :sb          seen set, live / batch part (seen.py)
    P:{u:<user>}:ap               applied markers of stream ids (cluster mode only)
    P:{u:<user>}:seen:<event_id>  a client event id already applied (24 h)
    P:{i:<item>}                  hash: counters (realtime.py)
    P:{i:<item>}:ap               applied markers (cluster mode only)
    P:touched                     sorted set item -> last applied time (ms)
    <cache prefix>:gen:{u:<user>} the user's result-cache generation (serving's result cache)
    {<linucb key>}:state          LinUCB's shared model; {<linucb key>}:pending:<user>:<item> its parked impressions
"""

from __future__ import annotations

GROUP = "online"
"""The stream's consumer group (every replica's consumer is a member)."""


def user_tag(user_id: int) -> str:
    """``{u:<id>}``: the hash tag shared by every key of one user."""
    return f"{{u:{int(user_id)}}}"


def item_tag(item_id: int) -> str:
    """``{i:<id>}``: the hash tag shared by every key of one item."""
    return f"{{i:{int(item_id)}}}"


def cache_generation_key(cache_prefix: str, user_id: int) -> str:
    """The result cache's generation counter of a user (INCR'd by each applied event of the user)."""
    return f"{cache_prefix}:gen:{user_tag(user_id)}"


def cache_result_key(cache_prefix: str, user_id: int, variant: str, shape_hash: str) -> str:
    """A cached answer of a user (same slot as the generation: one MGET reads both)."""
    return f"{cache_prefix}:res:{user_tag(user_id)}:{variant}:{shape_hash}"


def linucb_state_key(prefix: str) -> str:
    """The shared LinUCB model hash; ``{<prefix>}`` tags it so its pending impressions share its slot."""
    return f"{{{prefix}}}:state"


def linucb_pending_key(prefix: str, user_id: int, item_id: int) -> str:
    """A shown impression's features, parked until the click (same slot as the state: one script updates both)."""
    return f"{{{prefix}}}:pending:{int(user_id)}:{int(item_id)}"


class OverlayKeys:
    """Redis key names of one Feast project's overlay, seen sets and event stream."""

    def __init__(self, project: str):
        self.project = project
        self.prefix = f"recsys:rt:{project}"
        self.stream = f"{self.prefix}:{{{project}:events}}"

    @property
    def dead_letters(self) -> str:
        """Entries that failed ``max_deliveries`` times (or can never be applied), with their error."""
        return f"{self.stream}:dlq"

    @property
    def invalidations(self) -> str:
        """Set of user ids whose result-cache invalidation is owed (a separate cache Redis was down)."""
        return f"{self.stream}:inv"

    def user(self, user_id: int) -> str:
        return f"{self.prefix}:{user_tag(user_id)}"

    def recent(self, user_id: int) -> str:
        return f"{self.user(user_id)}:r"

    def seen_batch(self, user_id: int) -> str:
        """Every item of the user as of the last materialization (:mod:`recsys.features.seen`)."""
        return f"{self.user(user_id)}:sb"

    def seen_live(self, user_id: int) -> str:
        """Items of the user's events applied since (the apply script appends)."""
        return f"{self.user(user_id)}:s"

    def user_applied(self, user_id: int) -> str:
        return f"{self.user(user_id)}:ap"

    def event_marker(self, user_id: int, event_id: str) -> str:
        """A client-supplied event id already applied for this user (a retried POST counts once)."""
        return f"{self.user(user_id)}:seen:{event_id}"

    def item(self, item_id: int) -> str:
        return f"{self.prefix}:{item_tag(item_id)}"

    def item_applied(self, item_id: int) -> str:
        return f"{self.item(item_id)}:ap"

    @property
    def touched(self) -> str:
        return f"{self.prefix}:touched"
