"""Data of the serving page: live numbers from serving's ``/metrics`` and the online store's health.

A background thread scrapes ``/metrics`` every ``scrape_interval_s`` and keeps the last
``history_points`` scrapes in memory (the console persists nothing); the page shows the last minute's
request rate, latency quantiles, stage timings and degraded answers, and plots rate and p95 over the
kept scrapes, and serving's event-stream counters (refused appends, dead-lettered entries, failed cache
invalidations) when it exports them. Redis numbers (event-consumer lag, the dead-letter stream's length,
materialization version, real-time freshness, memory) are read when the page is drawn. ``/metrics`` is one
ingress replica's registry: behind a load balancer each scrape may hit another replica (docs/console.md).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from recsys.console import sources
from recsys.console.config import ConsoleConfig
from recsys.console.prometheus_text import Scrape, ScrapeHistory, increase, quantile
from recsys.console.sources import NotAvailable
from recsys.console.svg import time_series_plot

WINDOW_S = 60.0
REQUESTS = "recsys_requests_total"
LATENCY = "recsys_request_latency_seconds"
STAGES = "recsys_stage_latency_seconds"
DEGRADED = "recsys_degraded_responses_total"
# serving's event-stream counters (serving/http/events.py), exported only where event ingestion is configured
REFUSED = "recsys_event_log_refused_total"
DEAD_LETTERED = "recsys_event_dead_lettered_total"
INVALIDATION_FAILURES = "recsys_event_invalidation_failures_total"


class ServingPage:
    def __init__(self, cfg: ConsoleConfig):
        self.cfg = cfg
        self.history = ScrapeHistory(cfg.history_points)
        self.last_error: NotAvailable | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: sources.RedisReader | None = None

    # ----------------------------------------------------------------- scraping
    def scrape_once(self) -> None:
        if self.cfg.metrics_url is None:
            self.last_error = NotAvailable("no serving metrics URL configured (--metrics-url)")
            return
        text = sources.scrape_metrics(self.cfg.metrics_url, self.cfg.timeout_s)
        if isinstance(text, NotAvailable):
            self.last_error = text
            return
        try:
            self.history.add(Scrape.parse(text, time.time()))
            self.last_error = None
        except ValueError as e:
            self.last_error = NotAvailable(f"{self.cfg.metrics_url} is not Prometheus text: {e}")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.scrape_once()
            self._stop.wait(self.cfg.scrape_interval_s)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="console-scraper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.cfg.timeout_s + 1)
        if self._redis is not None:
            self._redis.close()

    # ------------------------------------------------------------------- views
    def traffic(self) -> dict[str, Any]:
        old, new = self.history.window(WINDOW_S)
        if new is None:
            return {"available": False, "reason": str(self.last_error or NotAvailable("no scrape yet"))}
        span = (new.at - old.at) if old is not None else None
        requests = increase({"n": new.total(REQUESTS)}, {"n": old.total(REQUESTS)} if old else None)["n"]
        lat = increase(new.buckets(LATENCY), old.buckets(LATENCY) if old else None)
        stages = sorted(new.by_label(f"{STAGES}_count", "stage"))
        stage_rows = []
        for stage in stages:
            def match(d, s=stage):
                return d.get("stage") == s
            b = increase(new.buckets(STAGES, match), old.buckets(STAGES, match) if old else None)
            stage_rows.append({"stage": stage, "count": max(b.values(), default=0.0),
                               **{f"p{int(q * 100)}_ms": _ms(quantile(q, b)) for q in (0.5, 0.95, 0.99)}})
        degraded = increase(new.by_label(DEGRADED, "reason"), old.by_label(DEGRADED, "reason") if old else None)
        statuses = increase(new.by_label(REQUESTS, "status"), old.by_label(REQUESTS, "status") if old else None)
        errors = sum(v for s, v in statuses.items() if s.startswith("5"))
        versions = sorted(f"{dict(labels)['model']}={dict(labels)['version']}"
                          for (n, labels), v in new.samples.items() if n == "recsys_model_version_info" and v)
        return {
            "available": True, "window_s": span, "requests": requests,
            "rate": (requests / span) if span else None,
            "latency_ms": {f"p{int(q * 100)}": _ms(quantile(q, lat)) for q in (0.5, 0.95, 0.99)},
            "stages": stage_rows,
            "degraded": [{"reason": r, "count": c, "share": (c / requests) if requests else None}
                         for r, c in sorted(degraded.items()) if c > 0],
            "error_share": (errors / requests) if requests else None,
            "model_versions": versions, "scraped_at": _iso(new.at), "events": _event_counters(new, old),
            "stale": str(self.last_error) if self.last_error else None,
        }

    def plots(self) -> dict[str, str]:
        scrapes = self.history.scrapes()
        now = time.time()
        ago, rates, p95 = [], [], []
        for prev, cur in zip(scrapes, scrapes[1:], strict=False):
            dt = cur.at - prev.at
            if dt <= 0:
                continue
            n = increase({"n": cur.total(REQUESTS)}, {"n": prev.total(REQUESTS)})["n"]
            ago.append(now - cur.at)
            rates.append(n / dt)
            p95.append(_ms(quantile(0.95, increase(cur.buckets(LATENCY), prev.buckets(LATENCY)))))
        return {"rate": time_series_plot(ago, rates, title="requests per second", y_label="req/s"),
                "p95": time_series_plot(ago, p95, title="latency p95 between scrapes", y_label="ms")}

    def online_store(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offline_build": sources.offline_build(self.cfg.feature_repo_dir)}
        redis_numbers = ("lag", "dead_letters", "materialization", "realtime_age_s", "memory")
        if self.cfg.redis_url is None:
            return {**out, **dict.fromkeys(redis_numbers, NotAvailable("no Redis URL configured"))}
        if self._redis is None:
            self._redis = sources.RedisReader(self.cfg.redis_url, self.cfg.feature_project, self.cfg.timeout_s)
        r = self._redis
        up = r.reachable()
        if isinstance(up, NotAvailable):
            return {**out, **dict.fromkeys(redis_numbers, up), "snapshot_age_s": None}
        last_ms, server_s = r.last_realtime_update_ms(), r.server_time_s()
        age = (server_s - last_ms / 1000.0) if isinstance(last_ms, int) and isinstance(server_s, float) else last_ms
        build = out["offline_build"]
        snapshot_age = None
        if isinstance(build, dict) and build.get("last_snapshot"):
            snapshot_age = time.time() - datetime.fromisoformat(build["last_snapshot"]).timestamp()
        return {**out, "lag": r.consumer_lag(), "dead_letters": r.dead_letters(),
                "materialization": r.materialization_version(), "realtime_age_s": age,
                "snapshot_age_s": snapshot_age, "memory": r.memory()}


def _event_counters(new: Scrape, old: Scrape | None) -> dict[str, Any] | None:
    """Totals since the replica started and the last minute's increase; None when serving exports none."""
    names = {n for n, _ in new.samples}
    if not names & {REFUSED, DEAD_LETTERED, INVALIDATION_FAILURES}:
        return None
    refused = new.by_label(REFUSED, "reason")
    recent = increase(refused, old.by_label(REFUSED, "reason") if old else None)
    return {"refused": [{"reason": r, "total": v, "window": recent.get(r)} for r, v in sorted(refused.items())],
            **{key: {"total": new.total(name),
                     "window": increase({"n": new.total(name)}, {"n": old.total(name)} if old else None)["n"]}
               for key, name in (("dead_lettered", DEAD_LETTERED), ("invalidation_failures", INVALIDATION_FAILURES))}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")
