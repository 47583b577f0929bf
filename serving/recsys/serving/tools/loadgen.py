"""A bounded HTTP load loop against the serving API, plus per-actor memory readings.

Used by ``benchmarks/load_soak.py`` and by the fault tests in ``tests/hardening``. The loop always
stops by itself: at ``duration_s`` *or* after ``max_requests``, whichever comes first, and it only
ever talks to a loopback URL (refused otherwise) so it cannot be pointed at someone else's server.

The traffic mix is meant to look like real use: mostly recommendations, some similar-item looks
and event writes; a small set of *hot* users gets most requests (so the result cache sees repeat
traffic), a share of requests comes from *cold* users the model has never seen, and events from
hot users invalidate their cached answers along the way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class NotLoopbackError(ValueError):
    """The load loop only targets loopback addresses."""


@dataclass
class LoadMix:
    """Share of each request kind and of user populations (shares are normalised)."""

    recommend: float = 0.75
    similar: float = 0.15
    events: float = 0.10
    hot_users: int = 20  # how many distinct hot users
    hot_share: float = 0.6  # share of recommend/events traffic from hot users
    cold_share: float = 0.1  # share from unknown users (cold start)
    n: int = 10


@dataclass
class Sample:
    kind: str
    t: float  # seconds since the loop started
    latency_s: float
    status: int  # 0 = transport error
    degraded: bool = False
    cached: bool = False


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    started_at: float = 0.0  # time.time() when the loop started; Sample.t is relative to it

    @property
    def count(self) -> int:
        return len(self.samples)

    def errors(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Transport errors and 5xx responses (4xx are the client's fault and never generated here)."""
        return sum(1 for s in self.samples if since <= s.t < until and (s.status == 0 or s.status >= 500))

    def events_unavailable(self) -> int:
        """503s of /v1/events: the feature store's ingestion is not configured or down (a dependency outage)."""
        return sum(1 for s in self.samples if s.kind == "events" and s.status == 503)

    def cached_count(self) -> int:
        return sum(1 for s in self.samples if s.cached)

    def status_counts(self) -> dict[int, int]:
        return dict(Counter(s.status for s in self.samples))

    def degraded_count(self) -> int:
        return sum(1 for s in self.samples if s.degraded)

    def percentiles(self, kind: str | None = None) -> dict[str, float]:
        lat = np.array([s.latency_s for s in self.samples if (kind is None or s.kind == kind) and s.status],
                       np.float64)
        if len(lat) == 0:
            return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
        p50, p95, p99 = np.percentile(lat, [50, 95, 99]) * 1000
        return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}

    def summary(self) -> dict[str, Any]:
        by_kind = {k: {"count": sum(1 for s in self.samples if s.kind == k), **self.percentiles(k)}
                   for k in sorted({s.kind for s in self.samples})}
        return {
            "requests": self.count,
            "wall_s": round(self.wall_s, 2),
            "throughput_rps": round(self.count / self.wall_s, 1) if self.wall_s else 0.0,
            "errors": self.errors(),
            "events_unavailable": self.events_unavailable(),
            "status": {str(k): v for k, v in sorted(self.status_counts().items())},
            "degraded": self.degraded_count(),
            "cached": self.cached_count(),
            **{k: round(v, 2) for k, v in self.percentiles().items()},
            "by_kind": by_kind,
        }


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise NotLoopbackError(f"--url must point at a loopback host (127.0.0.1/localhost), got {host!r}")


class _Traffic:
    """Draws the next request from the mix (seeded: two runs send the same sequence)."""

    def __init__(self, mix: LoadMix, user_ids: Sequence[int], item_ids: Sequence[int], seed: int):
        self.mix = mix
        self.rng = random.Random(seed)
        users = list(user_ids) or [1]
        self.hot = users[: max(1, mix.hot_users)]
        self.warm = users[max(1, mix.hot_users):] or self.hot
        self.items = list(item_ids) or [1]
        self.cold_base = 10**12  # ids no model has seen
        total = mix.recommend + mix.similar + mix.events
        self.p_rec = mix.recommend / total
        self.p_sim = mix.similar / total

    def user(self) -> int:
        r = self.rng.random()
        if r < self.mix.cold_share:
            return self.cold_base + self.rng.randrange(10**6)
        if r < self.mix.cold_share + self.mix.hot_share:
            return self.rng.choice(self.hot)
        return self.rng.choice(self.warm)

    def next(self) -> tuple[str, str, str, dict | None]:
        r = self.rng.random()
        if r < self.p_rec:
            return "recommend", "POST", "/v1/recommendations", {"user_id": self.user(), "n": self.mix.n}
        if r < self.p_rec + self.p_sim:
            return "similar", "GET", f"/v1/items/{self.rng.choice(self.items)}/similar?n={self.mix.n}", None
        user = self.rng.choice(self.hot) if self.rng.random() < 0.5 else self.user()
        event = {"user_id": user, "item_id": self.rng.choice(self.items),
                 "event_type": self.rng.choice(["view", "view", "click", "purchase"])}
        return "events", "POST", "/v1/events", event


async def run_load(
    url: str,
    *,
    duration_s: float,
    max_requests: int,
    concurrency: int = 8,
    user_ids: Sequence[int] = (),
    item_ids: Sequence[int] = (),
    mix: LoadMix | None = None,
    api_key: str | None = None,
    seed: int = 0,
    timeout_s: float = 10.0,
    path_prefix: str = "",
) -> LoadResult:
    """Closed-loop load: ``concurrency`` workers, each sending its next request when the last returns."""
    import httpx

    check_loopback(url)
    if duration_s <= 0 or max_requests <= 0:
        raise ValueError("duration_s and max_requests must both be > 0 (the loop must be bounded)")
    traffic = _Traffic(mix or LoadMix(), user_ids, item_ids, seed)
    headers = {"X-API-Key": api_key} if api_key else {}
    result = LoadResult(started_at=time.time())
    issued = 0
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url.rstrip("/") + path_prefix, timeout=timeout_s, limits=limits,
                                 headers=headers) as client:

        async def worker() -> None:
            nonlocal issued
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                kind, method, path, body = traffic.next()
                start = time.perf_counter()
                status, degraded, cached = 0, False, False
                try:
                    resp = await client.request(method, path, json=body)
                    status = resp.status_code
                    if kind != "events" and status == 200:
                        payload = resp.json()
                        degraded = bool(payload.get("degraded"))
                        cached = bool(payload.get("cached"))
                except (httpx.HTTPError, ValueError):
                    status = 0
                end = time.perf_counter()
                result.samples.append(Sample(kind, start - t0, end - start, status, degraded, cached))

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    result.wall_s = time.perf_counter() - t0
    return result


def run_load_sync(url: str, **kwargs: Any) -> LoadResult:
    """:func:`run_load` from synchronous code (tests, scripts); runs its own event loop."""
    return asyncio.run(run_load(url, **kwargs))


# ---------------------------------------------------------------------- Ray actor memory
def _actor_pids() -> list[tuple[str, int]]:
    """(class name, pid) of the live actors of the cluster this process is connected to."""
    import ray

    try:  # the GCS actor table: always the connected cluster, works without the dashboard
        from ray._private import state

        return [(str(a.get("ActorClassName", "")), int(a["Pid"])) for a in state.actors().values()
                if a.get("State") == "ALIVE" and a.get("Pid")]
    except Exception:  # noqa: BLE001 - private API moved: use the public state API of *this* cluster
        from ray.util.state import list_actors

        # an explicit address: the default (127.0.0.1:8265) may be another cluster's dashboard
        address = ray.get_runtime_context().gcs_address
        return [(str(a.class_name), int(a.pid))
                for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=10_000,
                                     raise_on_missing_output=False)]


def actor_rss(name_filter: str | tuple[str, ...] = "ServeReplica") -> dict[str, int]:
    """RSS bytes of each live Ray actor on this machine whose class name contains ``name_filter``
    (or any of them, for a tuple).

    Actors come from the connected cluster's actor table (``ray.util.state.list_actors`` as the
    fallback), RSS from psutil on each actor's pid. Keys are ``"<class name>#<pid>"`` so replicas
    of one deployment stay apart (a restarted replica shows up under a new key).
    """
    import psutil

    wanted = (name_filter,) if isinstance(name_filter, str) else name_filter
    out: dict[str, int] = {}
    for cls, pid in _actor_pids():
        if wanted and not any(w in cls for w in wanted):
            continue
        try:
            out[f"{cls}#{pid}"] = int(psutil.Process(pid).memory_info().rss)
        except (psutil.Error, OSError):
            continue
    return out
