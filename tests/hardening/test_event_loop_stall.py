"""``POST /v1/events`` never blocks the event loop on Redis (issue 22): LinUCB rewards go through a queue.

A private redis-server (never the shared one) holds the LinUCB state and is stalled with ``DEBUG SLEEP 2``
three times back to back while one request posts 1,000 click events on explored items (each one a LinUCB
reward, a Redis script call). The event log and features stay on the test Redis: a stall there makes
``/v1/events`` answer 503 before any reward (correct, and not what this test is about), so the stall is
placed where it hits the reward calls, as a stall starting just after the log write would.

Recommendation requests run concurrently on the same event loop; none may take longer than its own
Redis budget allows (``feature_timeout_s`` plus its normal latency), although before the fix the inline
reward calls froze the loop for the whole stall. Afterwards every reward reaches Redis.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import redis

STALL_S, STALLS, EVENTS = 2, 3, 1000


def test_events_batch_during_a_redis_stall_does_not_delay_recommendations(app_args, redis_url, private_redis,
                                                                          tmp_path):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.exploration.linucb import LinUCB
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**{**app_args(redis_url), "exposure_log_dir": str(tmp_path / "x"),
                           "new_item_days": 1e6, "catalog_poll_s": 0, "cache": {"enabled": False},
                           "linucb": {"key": f"test:stall:{uuid.uuid4().hex}", "refresh_s": 0}})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    app = create_api(svc)
    new_items: list[int] = []
    bandit = None

    async def scenario() -> tuple[list[float], list[float], int]:
        nonlocal bandit, new_items
        await svc.start()
        new_items = [int(i) for i in svc.explorer.new_item_ids[:50]]
        assert len(new_items) >= 10, "the test store needs explored (new) items"
        # as after a LinUCB variant's first request in this replica (clicks are rewards from then on)
        bandit = svc.exploration._linucb = LinUCB(private_redis.url, cfg.linucb)
        for j, item in enumerate(new_items):  # park impressions, so every click is a real reward call
            bandit.record_impression(10_000 + j, item, [0.0] * bandit.d)
        events = [{"user_id": 10_000 + (i % len(new_items)), "item_id": new_items[i % len(new_items)],
                   "event_type": "click"} for i in range(EVENTS)]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
            async def recommend_loop(until: float, out: list[float]) -> None:
                while time.monotonic() < until:
                    t0 = time.monotonic()
                    r = await c.post("/v1/recommendations", json={"user_id": 1, "n": 5})
                    assert r.status_code == 200, r.text
                    out.append(time.monotonic() - t0)
                    await asyncio.sleep(0.02)

            baseline: list[float] = []
            await recommend_loop(time.monotonic() + 1.0, baseline)
            stalls = threading.Thread(target=_stall_redis, args=(private_redis.port,), daemon=True)
            stalls.start()
            await asyncio.sleep(0.1)  # the first stall has begun
            during: list[float] = []
            loop_task = asyncio.create_task(recommend_loop(time.monotonic() + STALL_S * STALLS, during))
            r = await c.post("/v1/events", json=events)
            await loop_task
            await asyncio.to_thread(stalls.join, 30)
            return baseline, during, r.status_code

    baseline, during, status = asyncio.run(scenario())
    assert status == 202
    budget = max(baseline) + cfg.feature_timeout_s + 0.5
    assert len(during) >= 10, during
    assert max(during) <= budget, (f"a recommendation took {max(during):.2f} s during the stall "
                                   f"(budget {budget:.2f} s; baseline max {max(baseline):.3f} s)")
    assert svc.exploration.rewards.join(30), "rewards never drained after the stall"
    bandit.refresh(force=True)
    clicks = float(redis.Redis(port=private_redis.port).hget(bandit.state_key, "clicks") or 0)
    assert clicks == len(new_items), "each parked impression's click rewarded exactly once"


def _stall_redis(port: int) -> None:
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=STALL_S * 3)
    for _ in range(STALLS):
        r.execute_command("DEBUG", "SLEEP", STALL_S)
