"""LinUCB rewards applied by one worker thread, off the event loop, through a bounded queue.

``POST /v1/events`` accepts up to 1,000 events; a click on an explored item is a LinUCB reward, one
Redis script call each. Made inline on the ingress event loop, a Redis stall (a slow fsync, a
failover, ``DEBUG SLEEP``) froze every request of the replica for up to the socket timeout per
event (issue 22). Here the HTTP handler only enqueues (never blocks); a daemon thread drains the
queue. When the queue is full (Redis down for long) a reward is dropped and counted
(``recsys_linucb_rewards_dropped_total``): the bandit learns a little less, no request waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Reward = tuple[int, int, float]  # (user_id, item_id, reward)


class RewardQueue:
    """``submit`` from the event loop; ``apply(user, item, reward)`` runs in the worker thread."""

    def __init__(self, apply: Callable[[int, int, float], Any], maxsize: int = 10_000,
                 on_drop: Callable[[], None] | None = None):
        self._apply = apply
        self._queue: queue.Queue[Reward | None] = queue.Queue(maxsize=maxsize)
        self._on_drop = on_drop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.applied = 0
        self.dropped = 0
        self.failed = 0

    def submit(self, user_id: int, item_id: int, reward: float = 1.0) -> bool:
        """Enqueue without blocking; False (counted) when the queue is full."""
        self._ensure_worker()
        try:
            self._queue.put_nowait((int(user_id), int(item_id), float(reward)))
            return True
        except queue.Full:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            return False

    def pending(self) -> int:
        return self._queue.qsize()

    def join(self, timeout_s: float) -> bool:
        """Wait until everything submitted so far was applied (tests, shutdown); True when drained."""
        done = threading.Event()

        def _wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=_wait, daemon=True).start()
        return done.wait(timeout_s)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):  # full: the daemon thread dies with the process
                self._queue.put_nowait(None)

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="linucb-rewards", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._apply(*item)
                self.applied += 1
            except Exception as e:  # noqa: BLE001 - Redis down: this reward is lost, the worker lives on
                self.failed += 1
                log.warning("linucb reward not recorded: %s", e)
            finally:
                self._queue.task_done()
