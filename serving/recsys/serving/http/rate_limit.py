"""Per-client token buckets (one replica's view): bounds how fast one client can make us write logs/state.

Used by ``POST /v1/recommendations`` when ``security.recommendations_per_client_per_s`` is set: each
answer writes an exposure record and bandit state, so an unauthenticated client must not be able to
drive those writes at line rate. The limit is per replica (no Redis round trip on the hot path); with R
ingress replicas a client gets at most R times the rate. The table of clients is bounded (LRU).
"""

from __future__ import annotations

import time
from collections import OrderedDict


class ClientRateLimiter:
    """``acquire(client)`` -> 0.0 when allowed, else the seconds until a token is available."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 100_000):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def acquire(self, client: bytes, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
