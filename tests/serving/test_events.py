"""POST /v1/events through a real Serve app: events from anyone, personalised at once, counted exactly.

One module-scoped app (result cache on, an API key from a file, its own feature project on the real
Redis). The ingress replica's stream consumer applies the events; the tests read the outcome through
the public API and, for exact counts, through the online feature reader.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

APP, PREFIX = "recsys_events", "/events-api"
API_KEY = "events-key-" + uuid.uuid4().hex[:8]
AUTH = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def app(serve_base_url, serving_args, wait_until_ready, tmp_path_factory):
    from ray import serve

    from recsys.serving.app import build_app

    key_file = tmp_path_factory.mktemp("secret") / "api-key"
    key_file.write_text(API_KEY + "\n")
    args = {**serving_args, "security": {"api_key_file": str(key_file)},
            "cache": {"enabled": True, "ttl_s": 300, "key_prefix": f"test:events:{uuid.uuid4().hex[:8]}"}}
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, blocking=False)
    url = f"{serve_base_url}{PREFIX}"
    wait_until_ready(url)
    yield url, args
    serve.delete(APP)
    from recsys.features import FeatureStoreConfig
    from recsys.features.online import delete_project_keys

    delete_project_keys(FeatureStoreConfig(redis_url=args["redis_url"], project=args["feature_project"]))


@pytest.fixture(scope="module")
def client(app):
    with httpx.Client(base_url=app[0], timeout=30) as c:
        yield c


def _first_genre(small_dataset) -> dict[int, str]:
    items = small_dataset.items
    return dict(zip(items.item_id.astype(int), items.genres.astype(str).str.split("|").str[0], strict=True))


def test_never_seen_user_is_personalised_by_three_clicks(client, small_dataset):
    genre_of = _first_genre(small_dataset)
    genre = max(set(genre_of.values()), key=lambda g: sum(v == g for v in genre_of.values()))
    clicked = [i for i, g in genre_of.items() if g == genre][:3]
    user = 50_000_000 + uuid.uuid4().int % 10**8  # unknown to the dataset, the model and the feature store
    req = {"user_id": user, "n": 10}

    before = client.post("/v1/recommendations", json=req).json()
    assert before["cold_start"] is True
    assert client.post("/v1/recommendations", json=req).json()["cached"] is True

    r = client.post("/v1/events", json=[{"user_id": user, "item_id": i, "event_type": "click"} for i in clicked],
                    headers=AUTH)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 3 and len(body["event_ids"]) == 3, body

    deadline, after = time.time() + 5, None
    while time.time() < deadline:  # the consumer applies within ~a second; the cache entry is invalidated
        after = client.post("/v1/recommendations", json=req).json()
        if not after["cached"] and not after["cold_start"]:
            break
        time.sleep(0.1)
    ids = [it["item_id"] for it in after["items"]]
    assert after["cached"] is False and after["cold_start"] is False, after
    assert not set(ids) & set(clicked), "clicked items are seen: excluded"
    share_before = sum(genre_of.get(it["item_id"]) == genre for it in before["items"]) / len(before["items"])
    share_after = sum(genre_of.get(i) == genre for i in ids) / len(ids)
    assert share_after >= 0.6 and share_after > share_before, (share_before, share_after)
    assert any("item_knn" in it["sources"] for it in after["items"]), "item-kNN from the new user's recent items"


def test_200_concurrent_events_for_one_user_count_exactly_200(app, client, small_dataset):
    from recsys.features import FeatureStoreConfig, OnlineFeatureClient

    url, args = app
    user, item = 60_000_000 + uuid.uuid4().int % 10**7, int(small_dataset.items.item_id.iloc[3])

    async def post_all() -> list[int]:
        sem = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=url, timeout=60) as c:
            async def one() -> int:
                async with sem:
                    r = await c.post("/v1/events", json={"user_id": user, "item_id": item, "event_type": "click"},
                                     headers=AUTH)
                    return r.status_code
            return await asyncio.gather(*(one() for _ in range(200)))

    codes = asyncio.run(post_all())
    assert codes.count(202) == 200, {c: codes.count(c) for c in set(codes)}
    reader = OnlineFeatureClient(FeatureStoreConfig(redis_url=args["redis_url"], project=args["feature_project"]))
    deadline = time.time() + 10
    while time.time() < deadline and reader.fetch(user, []).user["user_clicks_all"] < 200:
        time.sleep(0.1)
    time.sleep(0.5)
    assert reader.fetch(user, []).user["user_clicks_all"] == 200


def test_event_contract_auth_and_errors(client):
    ev = {"user_id": 7, "item_id": 8, "event_type": "view"}
    assert client.post("/v1/events", json=ev).status_code == 401
    assert client.post("/v1/events", json=ev, headers={"X-API-Key": "wrong"}).status_code == 401
    r = client.post("/v1/events", json=ev, headers=AUTH)  # no timestamp: now
    assert r.status_code == 202 and isinstance(r.json()["event_ids"][0], str)
    bad = [({**ev, "user_id": True}, "user_id"), ({**ev, "user_id": "7"}, "user_id"),
           ({**ev, "event_type": "rating"}, "rating"), ({**ev, "event_type": "rating", "rating": 6}, "rating"),
           ({**ev, "timestamp": "1999-12-31T23:00:00Z"}, "timestamp"), ({**ev, "user_id": 2**63}, "user_id")]
    for body, field in bad:
        r = client.post("/v1/events", json=body, headers=AUTH)
        assert r.status_code == 422 and field in str(r.json()["detail"]), (body, r.text)
    r = client.post("/v1/events", json=[ev] * 1001, headers=AUTH)
    assert r.status_code == 422 and "1000" in r.text
    r = client.post("/v1/events", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code in (400, 422) and "Traceback" not in r.text


def test_ingestion_outage_is_503_with_retry_after_and_no_url(serving_args, closed_redis_url):
    """The event log cannot be written: nothing accepted, 503 + Retry-After, no URL in the answer."""
    from starlette.testclient import TestClient

    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    url = closed_redis_url.replace("redis://", "redis://:hunter2@")
    cfg = ServingConfig(**{**serving_args, "redis_url": url})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    outcomes = []
    svc.record_event = outcomes.append  # the outcome log must not see an event that was not accepted
    with TestClient(create_api(svc)) as c:
        r = c.post("/v1/events", json={"user_id": 1, "item_id": 2, "event_type": "click"})
    assert r.status_code == 503 and r.headers["retry-after"].isdigit(), r.text
    assert "hunter2" not in r.text and "redis" not in r.text.lower() and "127.0.0.1" not in r.text
    assert outcomes == []


# ------------------------------------------------------------------ Redis stall through the whole app
@pytest.fixture(scope="module")
def stall_app(serve_base_url, serving_args, wait_until_ready, tmp_path_factory):
    """An app on a private redis-server that the test freezes (SIGSTOP); the shared Redis is never touched."""
    import importlib.util
    from pathlib import Path

    from ray import serve

    from recsys.serving.app import build_app

    spec = importlib.util.spec_from_file_location(
        "recsys_tests_hardening_helpers_ev", Path(__file__).resolve().parents[1] / "hardening" / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    rp = helpers.RedisProcess(helpers.free_port(), tmp_path_factory.mktemp("stall_redis"))
    rp.start()
    args = {**serving_args, "redis_url": rp.url, "feature_timeout_s": 0.5,
            "cache": {"enabled": True, "ttl_s": 300, "key_prefix": "test:stall"}}
    serve.run(build_app(args), name=APP + "_stall", route_prefix=PREFIX + "-stall", blocking=False)
    url = f"{serve_base_url}{PREFIX}-stall"
    wait_until_ready(url)
    yield url, rp
    serve.delete(APP + "_stall")
    rp.stop()


def test_redis_stall_loses_no_acknowledged_event(stall_app):
    """Events get 202 right up to a Redis stall; after Redis returns, every one of them is in the
    user's history within 2 s: the cached answer that contained them is invalidated and they are filtered."""
    import signal
    import threading

    url, rp = stall_app
    user = 70_000_000 + uuid.uuid4().int % 10**7
    req = {"user_id": user, "n": 10}
    with httpx.Client(base_url=url, timeout=30) as c:
        shown = [it["item_id"] for it in c.post("/v1/recommendations", json=req).json()["items"]]
        assert c.post("/v1/recommendations", json=req).json()["cached"] is True
        accepted: list[int] = []
        refused: list[int] = []
        unexpected: list[str] = []  # the thread only collects; the main thread asserts (a thread's assert is lost)
        stop = threading.Event()

        def click_through_the_stall() -> None:  # one click per shown item, 0.15 s apart
            try:
                with httpx.Client(base_url=url, timeout=30) as pc:
                    for item in shown:
                        if stop.is_set():
                            return
                        r = pc.post("/v1/events", json={"user_id": user, "item_id": item, "event_type": "click"})
                        if r.status_code == 202:
                            accepted.append(item)
                        elif r.status_code == 503:
                            refused.append(item)
                        else:  # e.g. a 500: neither acknowledged nor a clean refusal
                            unexpected.append(f"item {item}: {r.status_code} {r.text[:200]}")
                        time.sleep(0.15)
            except Exception as e:  # noqa: BLE001 - reported to the main thread below
                unexpected.append(f"{type(e).__name__}: {e}")

        t = threading.Thread(target=click_through_the_stall, daemon=True)
        t.start()
        time.sleep(0.35)
        rp.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1.5)
        finally:
            rp.proc.send_signal(signal.SIGCONT)
        t.join(30)
        stop.set()
        assert not t.is_alive(), "the clicking thread did not finish within 30 s"
        assert not unexpected, f"only 202 or 503 may answer an event: {unexpected}"
        assert accepted and refused, (accepted, refused)  # 202s before and after the stall, 503s during it
        deadline = time.time() + 2.0  # Redis is back and the last event was answered: 2 s to be reflected
        while True:
            body = c.post("/v1/recommendations", json=req).json()
            leaked = set(accepted) & {it["item_id"] for it in body["items"]}
            if not leaked and not body["degraded"] or time.time() > deadline:
                break
            time.sleep(0.1)
        assert not leaked, f"acknowledged clicks still recommended {leaked} (accepted {accepted}, 503 {refused})"
