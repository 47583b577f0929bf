"""The retried queue of result-cache invalidations owed by acknowledged events (cache on another Redis).

Why: when the result cache lives on another Redis than the stream, the apply step cannot bump the
user's cache generation itself. It adds the user to a Redis set (``OverlayKeys.invalidations``) in the
same atomic step as the XACK; :meth:`InvalidationQueue.flush` then calls ``on_applied`` for the queued
users and removes them only once that returned. A cache outage leaves them queued and the next poll
retries, so an acknowledged event always ends in an invalidated cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from recsys.features.keys import OverlayKeys

log = logging.getLogger(__name__)


class InvalidationQueue:
    """``flush()`` once per poll; ``pending()`` is what is still owed (``drain`` waits for 0)."""

    def __init__(self, client, keys: OverlayKeys, on_applied: Callable[[list[dict]], None] | None, name: str,
                 stats) -> None:
        self.redis, self.keys, self.on_applied, self.name, self.stats = client, keys, on_applied, name, stats
        self._failing = False

    def flush(self) -> int:
        """Call ``on_applied`` for up to 1,000 queued users; dequeue only on success. Returns how many."""
        if self.on_applied is None:
            return 0
        users = [int(u) for u in self.redis.srandmember(self.keys.invalidations, 1000) or []]
        if not users:
            return 0
        try:
            self.on_applied([{"user_id": u} for u in users])
        except Exception as e:  # noqa: BLE001 - a cache outage must not stop event application
            self.stats.invalidation_failures += 1
            if not self._failing:
                log.warning("event consumer %s: result-cache invalidation failed (%s: %s); %d users stay queued "
                            "and are retried", self.name, type(e).__name__, e, len(users))
            self._failing = True
            return 0
        self._failing = False
        self.redis.srem(self.keys.invalidations, *users)
        return len(users)

    def pending(self) -> int:
        return int(self.redis.scard(self.keys.invalidations)) if self.on_applied is not None else 0
