"""Thompson-sampling exploration slot for brand-new items (cold-start items).

New items have no interactions, so no model can rank them well. With probability
``rate`` a request gets one exploration slot: every eligible new item draws from its
Beta(1 + clicks, 1 + impressions - clicks) posterior and the best draw takes the slot. Items that
get clicked keep winning; items shown often without clicks fade out. Posteriors live in memory
per ingress replica (cheap, lossy on restart); issue 7 may move them to Redis (same interface).
"""

from __future__ import annotations

import threading

import numpy as np


class ThompsonExplorer:
    def __init__(self, new_item_ids: np.ndarray, rate: float, seed: int | None = None):
        self.new_item_ids = np.unique(np.asarray(new_item_ids, np.int64))  # sorted
        self.rate = float(rate)
        self._rng = np.random.default_rng(seed)
        self._impressions: dict[int, int] = {}
        self._clicks: dict[int, int] = {}
        self._lock = threading.Lock()

    def is_new(self, item_id: int) -> bool:
        i = int(np.searchsorted(self.new_item_ids, item_id))
        return bool(i < len(self.new_item_ids) and self.new_item_ids[i] == item_id)

    def should_explore(self, rate: float | None = None) -> bool:
        """The per-request coin flip (checked before any other exploration work)."""
        with self._lock:
            return bool(self._rng.random() < (self.rate if rate is None else rate))

    def candidate_pool(self, size: int = 256) -> np.ndarray:
        """Items worth a posterior draw: every new item with a click, plus a random sample of the rest.

        Keeps the per-request cost bounded on catalogs with many thousands of new items; an item
        that was never clicked has the prior Beta(1, 1 + shown), so sampling it uniformly loses little.
        """
        with self._lock:
            clicked = np.fromiter(self._clicks.keys(), np.int64, len(self._clicks))
            n = len(self.new_item_ids)
            sample = self.new_item_ids if n <= size else self.new_item_ids[self._rng.choice(n, size, replace=False)]
        return np.unique(np.concatenate([clicked, sample]))

    def pick(self, eligible: np.ndarray, rate: float | None = None) -> int | None:
        """An item id from ``eligible`` (a subset of new items) for the slot, or None this time."""
        rate = self.rate if rate is None else rate
        eligible = np.asarray(eligible, np.int64)
        with self._lock:
            if len(eligible) == 0 or self._rng.random() >= rate:
                return None
            a = np.array([1 + self._clicks.get(int(i), 0) for i in eligible], np.float64)
            shown = np.array([self._impressions.get(int(i), 0) for i in eligible], np.float64)
            b = 1 + np.maximum(shown - (a - 1), 0)
            draws = self._rng.beta(a, b)
            return int(eligible[int(np.argmax(draws))])

    def record_impression(self, item_id: int) -> None:
        with self._lock:
            self._impressions[int(item_id)] = self._impressions.get(int(item_id), 0) + 1

    def record_click(self, item_id: int) -> None:
        with self._lock:
            self._clicks[int(item_id)] = self._clicks.get(int(item_id), 0) + 1

    def posterior(self, item_id: int) -> tuple[int, int]:
        """(alpha, beta) of the item's Beta posterior."""
        c, n = self._clicks.get(int(item_id), 0), self._impressions.get(int(item_id), 0)
        return 1 + c, 1 + max(n - c, 0)
