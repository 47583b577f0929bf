"""A full Redis answers ``POST /v1/events`` with 503 + Retry-After through the real HTTP API (issue 22).

Why: the chart runs Redis with ``maxmemory`` + ``noeviction``, so a full Redis refuses writes; the
client must get a retryable 503 naming the cause (nothing accepted), not a 500 or a silent loss, and
the API must accept again once memory is freed. The ingestor-level test (tests/features/
test_stream_limits.py) checks the exception; this one runs the real app (real service, real routes)
against a private ``redis-server`` with a tiny ``maxmemory`` started here, never the shared server.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.private_redis import private_redis


@pytest.fixture
def full_redis(tmp_path):
    """A private redis-server with maxmemory 64mb and noeviction (what the Helm chart configures)."""
    with private_redis(tmp_path, "64mb") as server:
        yield server


def _fill(client: redis.Redis) -> None:
    """Make Redis full: ``maxmemory`` below what it uses (noeviction: every write refused, nothing evicted).

    Filling it with values up to the limit is not enough here: the app's own connections and background
    threads move ``used_memory`` by client buffers, so the next write may fit again."""
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", max(used - 256 * 1024, 1024 * 1024))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", b"x")


async def _scenario(cfg, client: redis.Redis) -> None:
    import httpx

    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    app = create_api(svc)
    events = [{"user_id": u, "item_id": 2, "event_type": "click"} for u in range(1, 11)]
    async with app.router.lifespan_context(app):
        await svc.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.post("/v1/events", json=events[:1])).status_code == 202, "accepted while there is room"
            stream = app.state.events.consumer.keys.stream
            _fill(client)
            length = client.xlen(stream)
            r = await c.post("/v1/events", json=events)
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert "out of memory" in r.json()["detail"], r.json()
            assert client.xlen(stream) == length, "nothing of the refused batch was appended"
            rec = await c.post("/v1/recommendations", json={"user_id": 1, "n": 5})
            assert rec.status_code == 200, "reads keep answering while Redis refuses writes"
            client.config_set("maxmemory", "64mb")  # the operator gives Redis room again
            r = await c.post("/v1/events", json=events)
            assert r.status_code == 202, r.text
            assert client.xlen(stream) == length + len(events)


@pytest.mark.timeout(180)
def test_full_redis_answers_events_with_503_and_retry_after(serving_args, full_redis):
    from recsys.serving.config import ServingConfig

    url, client = full_redis
    cfg = ServingConfig(**{**serving_args, "redis_url": url, "num_shards": 1, "catalog_poll_s": 0,
                           "feature_timeout_s": 2.0})
    asyncio.run(_scenario(cfg, client))
