"""Prometheus metrics of the serving pipeline, one registry per service instance.

A private :class:`CollectorRegistry` (instead of the global one) lets several services live in one
process (tests) without "duplicated timeseries" errors. Stage names are the pipeline's:
``history``, ``cache``, ``embed``, ``retrieval``, ``candidates``, ``hydration``, ``ranking``,
``reranking``, ``total``. Names match the Grafana dashboard shipped with the Helm chart
(``helm/recsys/files/grafana-dashboard.json``); ``docs/operations.md`` lists them all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from recsys.serving.http.observability import RequestContext

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests_total", "HTTP requests by endpoint, experiment variant and status",
                                ["endpoint", "variant", "status"], registry=self.registry)
        self.request_latency = Histogram("recsys_request_latency_seconds", "End-to-end HTTP latency in the ingress",
                                         ["endpoint"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.stage_seconds = Histogram("recsys_stage_latency_seconds", "Latency of each pipeline stage", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=self.registry)
        self._stage_children: dict[str, Any] = {}
        self.cache_hits = Counter("recsys_cache_hits_total", "Result-cache hits", registry=self.registry)
        self.cache_misses = Counter("recsys_cache_misses_total", "Result-cache misses (errors included)",
                                    registry=self.registry)
        self.cache_errors = Counter("recsys_cache_errors_total", "Result-cache Redis errors (counted as misses)",
                                    registry=self.registry)
        self.candidates = Histogram("recsys_candidates", "Candidates per request after merge",
                                    buckets=(10, 50, 100, 200, 400, 800, 1600, 3200), registry=self.registry)
        self.degraded = Counter("recsys_degraded_responses_total", "Degraded responses by reason", ["reason"],
                                registry=self.registry)
        self.variant_requests = Counter("recsys_variant_requests_total", "Recommendations per experiment variant",
                                        ["experiment", "variant"], registry=self.registry)
        self.stage_errors = Counter("recsys_stage_errors_total", "Failures per stage", ["stage"],
                                    registry=self.registry)
        self.model_version = Gauge("recsys_model_version_info", "Model version served (value 1)",
                                   ["model", "version"], registry=self.registry)
        self.ranker_active = Gauge("recsys_ranker_active", "1 when a ranker version is loaded; 0: every response "
                                   "is ranked by retrieval score (none promoted, e.g. refused by the gate)",
                                   registry=self.registry)
        self.bundle_loads = Counter("recsys_bundle_loads_total", "Ingress-side artifact loads of a model bundle "
                                    "(start-up, rollout, reload preflight)", registry=self.registry)
        self.rollout_polls = Counter("recsys_rollout_polls_total", "Periodic promoted-version polls by outcome "
                                     "(unchanged, changed, refused, failed)", ["outcome"], registry=self.registry)
        self.rollout_redeploys = Counter("recsys_rollout_redeploys_total", "Redeploys of the Serve app this replica "
                                         "started (a new user_config for every replica)", registry=self.registry)
        self.linucb_rewards_dropped = Counter("recsys_linucb_rewards_dropped_total", "LinUCB rewards dropped because "
                                              "the reward queue was full (Redis slow or down)", registry=self.registry)
        self.ranking_mode = Counter("recsys_ranking_mode_total", "Responses by how they were ordered "
                                    "(ranker, retrieval_only, cold_start)", ["mode"], registry=self.registry)

    @contextmanager
    def stage(self, name: str, timings: dict[str, float] | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            child = self._stage_children.get(name)
            if child is None:  # .labels() takes a lock and builds a key: once per stage name, not per call
                child = self._stage_children[name] = self.stage_seconds.labels(name)
            child.observe(dt)
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + dt

    def observe_request(self, ctx: RequestContext, latency_s: float) -> None:
        """Called once per HTTP request by the access-log middleware."""
        self.requests.labels(ctx.endpoint, ctx.variant_label(), str(ctx.status)).inc()
        self.request_latency.labels(ctx.endpoint).observe(latency_s)

    def set_versions(self, versions: dict[str, str]) -> None:
        self.model_version.clear()
        for model, version in versions.items():
            self.model_version.labels(model, version).set(1)
        self.ranker_active.set(1 if versions.get("ranking") else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
