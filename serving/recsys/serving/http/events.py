"""Serving side of ``POST /v1/events``: accept into the durable stream, apply in this replica's consumer.

Where the consumer runs: inside every ingress replica, as one daemon thread started with the app
(consumer name ``hostname-pid``, so one name per replica process). All replicas share one consumer
group, so Redis spreads the entries over them; a replica that dies leaves its unacknowledged entries
pending, and the others take them over (XAUTOCLAIM) after ``reclaim_idle_ms``. Applying an entry also
bumps the user's result-cache generation in the same Lua script (when the cache lives on the same
Redis), so a cached answer never outlives the event that made it stale; with a separate cache Redis
the XACK queues the user in a Redis set and the consumer invalidates the queued users, dequeuing
them only once that succeeded (retried on every poll): an acknowledged event always ends in an
invalidated cache. Stream entries the consumer cannot apply go to the dead-letter stream
(``recsys events dlq``), never block it.

Event ingestion needs only the feature store's Redis (stream + overlay); ``feature_repo_dir`` adds
the JSON-lines archive of applied events for offline use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


class EventsNotConfigured(RuntimeError):
    """recsys.features is missing or its config was rejected: /v1/events answers 503."""


class EventPipeline:
    """One per ingress replica: the ingestor (request path) and the stream consumer (background)."""

    def __init__(self, service: Any):
        self.service = service
        self.ingestor = None
        self.consumer = None
        store_cfg = service.features.store_config
        if store_cfg is None:
            return
        try:
            from recsys.features.event_log import EventLog
            from recsys.features.ingest import EventIngestor
            from recsys.features.stream import StreamConfig, StreamConsumer
        except ImportError as e:  # pragma: no cover - features package not installed
            log.warning("event ingestion unavailable: %s", e)
            return
        stream_cfg = StreamConfig(retention_s=service.cfg.online_state.stream_retention_s)
        self.ingestor = EventIngestor(store_cfg, stream_cfg)
        cache = service.cache
        same_redis = cache.config.redis_url in (None, service.cfg.redis_url)
        prefix = cache.config.key_prefix if cache.enabled and same_redis else ""  # keys.cache_generation_key
        on_applied = None
        if cache.enabled and not same_redis:
            on_applied = self._invalidate
        archive: Any = EventLog(store_cfg.log_path) if service.cfg.feature_repo_dir is not None else None
        if service.cfg.log_archive is not None:  # parquet days at a URI, written by this consumer group
            from recsys.platform.log_archiver import DatasetArchive

            archive = DatasetArchive(service.cfg.log_archive.uri, "events", service.cfg.log_archive.retention_days)
        self.consumer = StreamConsumer(store_cfg, stream_cfg=stream_cfg, invalidate_prefix=prefix,
                                       invalidate_ttl_s=int(cache.config.generation_ttl_s),
                                       on_applied=on_applied, archive=archive)

    @property
    def enabled(self) -> bool:
        return self.ingestor is not None

    def _invalidate(self, records: list[dict]) -> None:
        for user in dict.fromkeys(int(r["user_id"]) for r in records):
            if not self.service.cache.invalidate_user(user):
                raise ConnectionError("result cache invalidation failed")  # retried with the entries

    def register_metrics(self, registry: Any) -> None:
        """Expose the stream's limits on /metrics (read at scrape time from the ingestor and consumer)."""
        registry.register(_EventStreamCollector(self))

    def start(self) -> None:
        if self.consumer is not None:
            self.consumer.start()

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()

    async def aclose(self) -> None:
        """Stop the consumer thread and close every Redis client (the replica is being replaced)."""
        self.stop()
        if self.ingestor is not None:
            await self.ingestor.stream.aclose()

    async def accept(self, events: Sequence[dict]) -> Any:
        """Validate and append (durable); raises EventValidationError / EventLogUnavailable."""
        if self.ingestor is None:
            raise EventsNotConfigured("event ingestion is not configured on this server")
        return await self.ingestor.accept_async(events)  # redis.asyncio: no thread hop per request


class _EventStreamCollector:
    """Prometheus collector: appends refused at the stream cap / by a full Redis, dead letters, consumer state."""

    def __init__(self, pipeline: EventPipeline):
        self.pipeline = pipeline

    def describe(self) -> list:
        return []  # collected lazily (no fixed series before the first scrape)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        refused = CounterMetricFamily("recsys_event_log_refused", "Event appends refused with 503 (nothing "
                                      "accepted): reason=full (stream cap, consumers behind) or oom (Redis "
                                      "maxmemory)", labels=["reason"])
        stream = getattr(self.pipeline.ingestor, "stream", None)
        refused.add_metric(["full"], float(getattr(stream, "refused_full", 0)))
        refused.add_metric(["oom"], float(getattr(stream, "refused_oom", 0)))
        yield refused
        stats = getattr(self.pipeline.consumer, "stats", None)
        for name, attr, doc in (("recsys_event_dead_lettered", "dead_lettered", "Stream entries moved to the "
                                 "dead-letter stream by this replica's consumer (recsys events dlq list)"),
                                ("recsys_event_invalidation_failures", "invalidation_failures",
                                 "Result-cache invalidations that failed and stay queued (retried)")):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(getattr(stats, attr, 0)))
            yield c
