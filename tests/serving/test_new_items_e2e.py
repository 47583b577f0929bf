"""A new item posted to a running server is in similar-items and a new user's recommendations within 5 s.

Two ingress "replicas" (each a real HTTP server: uvicorn in a thread around its own
RecommendationService, local shards/ranker, the real Redis) share the Redis catalog feed: the item is
posted to replica A and must be served by both, without retraining.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.serving.conftest import base_args, build_store, free_port

KEY_ENV = "RECSYS_TEST_H8_ITEMS_KEY"


class _Replica:
    def __init__(self, cfg_args: dict):
        import uvicorn

        from recsys.serving.config import ServingConfig
        from recsys.serving.deployments.ranker import Ranker
        from recsys.serving.deployments.retrieval_shard import RetrievalShard
        from recsys.serving.http.api import create_api
        from recsys.serving.pipeline.service import RecommendationService

        cfg = ServingConfig(**cfg_args)
        self.service = RecommendationService(
            cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)], Ranker(cfg))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_api(self.service), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("replica did not start")
            time.sleep(0.1)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(self.service.start())  # builds the content index, starts the feed poller
        loop.run_until_complete(self.server.serve())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def replicas(small_dataset, redis_url, tmp_path_factory):
    import redis

    from recsys.serving.catalog.feed import STREAM_KEY

    r = redis.Redis.from_url(redis_url)
    r.delete(STREAM_KEY)
    store, catalog = build_store(small_dataset, tmp_path_factory.mktemp("e2e_store"))
    args = {**base_args(store, catalog, redis_url, tmp_path_factory.mktemp("e2e_exposures")),
            "catalog_poll_s": 0.5, "security": {"api_key_env": KEY_ENV}}
    import os

    os.environ[KEY_ENV] = "s3cret"
    reps = [_Replica(args), _Replica(args)]
    yield reps
    for rep in reps:
        rep.stop()
    os.environ.pop(KEY_ENV, None)
    r.delete(STREAM_KEY)


def test_post_items_validation_and_auth(replicas):
    a = replicas[0].url
    item = {"item_id": 987_001, "title": "X", "genres": ["Drama"]}
    assert httpx.post(f"{a}/v1/items", json={"items": [item]}).status_code == 401
    assert httpx.post(f"{a}/v1/items", json={"items": [item]}, headers={"X-API-Key": "wrong"}).status_code == 401
    bad = httpx.post(f"{a}/v1/items", json={"items": [{**item, "title": ""}]}, headers={"X-API-Key": "s3cret"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "title"
    bad = httpx.post(f"{a}/v1/items", json={"items": [{**item, "year": 99}]}, headers={"X-API-Key": "s3cret"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "year"
    assert httpx.post(f"{a}/v1/items", json={"items": []}, headers={"X-API-Key": "s3cret"}).status_code == 422
    assert httpx.get(f"{a}/v1/items/987001/similar").status_code == 404  # nothing was added


def test_new_item_served_by_every_replica_within_5s(replicas, small_dataset):
    items = small_dataset.items
    src = items.iloc[42]
    src_id = int(src["item_id"])
    new_id = int(items["item_id"].max()) + 5000
    body = {"items": [{"item_id": new_id, "title": f"{src['title']} Returns", "genres": str(src["genres"]).split("|"),
                       "description": str(src["description"])}]}
    a, b = (rep.url for rep in replicas)
    t0 = time.perf_counter()
    resp = httpx.post(f"{a}/v1/items", json=body, headers={"Authorization": "Bearer s3cret"})
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"accepted": 1, "item_ids": [new_id], "content_indexed": True}
    seen: dict[tuple[str, str], float] = {}
    new_user = 10**12
    while time.perf_counter() - t0 < 5.0 and len(seen) < 4:
        for url in (a, b):
            if (url, "similar") not in seen:
                r = httpx.get(f"{url}/v1/items/{new_id}/similar", params={"n": 5})
                if r.status_code == 200:
                    sim = r.json()["items"]
                    assert sim[0]["item_id"] == src_id and "content" in sim[0]["sources"]
                    seen[(url, "similar")] = time.perf_counter() - t0
            if (url, "recs") not in seen:
                # a brand-new user whose first click is the source item
                r = httpx.post(f"{url}/v1/recommendations",
                               json={"user_id": new_user, "n": 20, "history": [src_id]})
                assert r.status_code == 200
                got = {it["item_id"]: it for it in r.json()["items"]}
                if new_id in got:
                    assert "content" in got[new_id]["sources"]
                    assert got[new_id]["title"] == f"{src['title']} Returns"
                    seen[(url, "recs")] = time.perf_counter() - t0
        time.sleep(0.1)
    print(f"new item served after (s): {seen}")
    assert len(seen) == 4, f"served within 5 s only: {seen}"
    assert max(seen.values()) < 5.0
    # the source item's own metadata neighbours now include the new item (the index is symmetric), on both
    # replicas' content index: b got the item from the catalog feed. (/v1/items/{src}/similar answers a known
    # item from ANN + item-kNN only, so it is checked for a 200, not for the new item.)
    r = httpx.get(f"{b}/v1/items/{src_id}/similar", params={"n": 10})
    assert r.status_code == 200, r.text
    for rep in replicas:
        neighbours, _ = rep.service.live.content.similar(src_id, 10)
        assert new_id in neighbours.tolist(), (rep.url, neighbours.tolist())


def test_a_posted_item_is_not_hidden_by_a_cached_answer(replicas, small_dataset):
    """The result cache's key holds the replica's catalog version: an answer cached before a posted item
    reached a replica is not replayed after it (it used to hide the item for the cache's 60 s TTL, so a
    request that came before the replica's next feed poll decided what the user saw for a minute)."""
    items = small_dataset.items
    src = items.iloc[42]
    a, b = (rep.url for rep in replicas)
    ask = {"user_id": 10**12 + 3, "n": 20, "history": [int(src["item_id"])]}
    first = httpx.post(f"{b}/v1/recommendations", json=ask).json()
    assert first["degraded"] is False and first["cached"] is False, first
    assert httpx.post(f"{b}/v1/recommendations", json=ask).json()["cached"] is True  # the cache works
    new_id = int(items["item_id"].max()) + 6000
    applied = replicas[1].service.live.applied
    body = {"items": [{"item_id": new_id, "title": f"{src['title']} Again", "genres": str(src["genres"]).split("|"),
                       "description": str(src["description"])}]}
    assert httpx.post(f"{a}/v1/items", json=body, headers={"X-API-Key": "s3cret"}).status_code == 201
    deadline = time.time() + 5
    while replicas[1].service.live.applied == applied and time.time() < deadline:  # b polls the feed
        time.sleep(0.05)
    assert replicas[1].service.live.applied > applied, "replica b never applied the posted item"
    after = httpx.post(f"{b}/v1/recommendations", json=ask).json()
    assert after["cached"] is False, "the answer cached before the item arrived was replayed"
    assert new_id in {it["item_id"] for it in after["items"]}


@pytest.mark.slow
def test_fuzz_post_items_no_5xx_and_4xx_name_the_field(replicas):
    """schemathesis on POST /v1/items (positive and negative cases): never a 5xx, every 4xx names a field.

    Slow (~50 s here); tests/hardening's fuzz of every operation covers the route in the default run.
    """
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    a = replicas[0].url
    schema = schemathesis.openapi.from_url(f"{a}/openapi.json")
    op = next(o.ok() for o in schema.get_all_operations()
              if o.ok().method.upper() == "POST" and o.ok().path == "/v1/items")
    failures: list[str] = []
    statuses: set[int] = set()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=30, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            try:
                r = case.call(base_url=a, headers={"X-API-Key": "s3cret"}, timeout=30)
            except (ValueError, UnicodeError):
                return
            statuses.add(r.status_code)
            if r.status_code >= 500:
                failures.append(f"{r.status_code}: {case.as_curl_command()} -> {r.text[:300]}")
            elif r.status_code >= 400:
                detail = r.json().get("detail")
                if not (isinstance(detail, list) and detail and all(d.get("loc") for d in detail)):
                    failures.append(f"{r.status_code} without a field: {r.text[:300]}")

        run()
    assert not failures, "\n".join(failures[:10])
    assert 201 in statuses and 422 in statuses, statuses


@pytest.mark.slow
def test_new_item_through_the_ray_serve_app_within_5s(serve_base_url, small_dataset, redis_url, tmp_path,
                                                      wait_until_ready):
    """The same promise through the real Serve application: 2 ingress replicas behind the Serve proxy."""
    import redis
    from ray import serve

    from recsys.serving.app import build_app
    from recsys.serving.catalog.feed import STREAM_KEY

    redis.Redis.from_url(redis_url).delete(STREAM_KEY)
    store, catalog = build_store(small_dataset, tmp_path)
    (tmp_path / "key").write_text("s3cret\n")
    args = {**base_args(store, catalog, redis_url, tmp_path / "exposures"), "catalog_poll_s": 0.5,
            "ingress_replicas": 2, "security": {"api_key_file": str(tmp_path / "key")}}
    serve.run(build_app(args), name="h8_new_items", route_prefix="/h8", blocking=False)
    url = f"{serve_base_url}/h8"
    try:
        wait_until_ready(url)
        src = small_dataset.items.iloc[7]
        new_id = int(small_dataset.items["item_id"].max()) + 7000
        t0 = time.perf_counter()
        r = httpx.post(f"{url}/v1/items", headers={"X-API-Key": "s3cret"}, timeout=30,
                       json={"items": [{"item_id": new_id, "title": f"{src['title']} II",
                                        "genres": str(src["genres"]).split("|"),
                                        "description": str(src["description"])}]})
        assert r.status_code == 201, r.text
        streak = 0  # consecutive successes: the proxy spreads them over both replicas
        while streak < 10 and time.perf_counter() - t0 < 5.0:
            sim = httpx.get(f"{url}/v1/items/{new_id}/similar", params={"n": 5}, timeout=30)
            recs = httpx.post(f"{url}/v1/recommendations", timeout=30,
                              json={"user_id": 10**12 + 7, "n": 20, "history": [int(src["item_id"])]})
            ok = sim.status_code == 200 and new_id in {it["item_id"] for it in recs.json()["items"]}
            streak = streak + 1 if ok else 0
        elapsed = time.perf_counter() - t0
        print(f"Serve app: new item served 10x in a row after {elapsed:.2f} s")
        assert streak >= 10, f"only {streak} consecutive successes after {elapsed:.1f} s"
    finally:
        serve.delete("h8_new_items")
        redis.Redis.from_url(redis_url).delete(STREAM_KEY)
