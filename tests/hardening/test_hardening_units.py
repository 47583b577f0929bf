"""The hardening building blocks on their own (real Redis, a tiny in-process ASGI app; no Ray).

Result cache: hit after put, per-user invalidation by one INCR, an answer computed across an event
is never served, a dead Redis is a fast miss (breaker) and never an exception. Middlewares: API key
401s (missing/wrong, constant shape), body-size 413 from the header and from a streamed body,
request id echo and one JSON access-log line without secrets.
"""

from __future__ import annotations

import io
import json
import logging
import time

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from recsys.serving.http.auth import (
    GUARD_STATE,
    ApiKeyGuard,
    KeyCheckedRoute,
    SecurityConfig,
    load_api_keys,
    require_api_key,
)
from recsys.serving.http.observability import (
    AccessLogMiddleware,
    JsonLogFormatter,
    current_request,
    sanitize_request_id,
)
from recsys.serving.http.request_limits import BodySizeLimitMiddleware
from recsys.serving.pipeline.cache.result_cache import CacheConfig, ResultCache, request_shape_hash
from tests.ports import free_port


# ---------------------------------------------------------------------------- result cache
@pytest.fixture
def cache(redis_url):
    prefix = f"test:rc:{time.time_ns()}"
    c = ResultCache(CacheConfig(ttl_s=30, key_prefix=prefix), redis_url)
    yield c
    keys = list(c._redis.scan_iter(f"{prefix}:*"))
    if keys:
        c._redis.delete(*keys)
    c.close()


def test_cache_hit_after_put_and_per_user_invalidation(cache):
    shape = request_shape_hash({"n": 5})
    first = cache.get(7, "none", shape)
    assert not first.hit and first.generation == 0 and not first.error
    assert cache.put(7, "none", shape, first.generation, {"items": [1, 2]})
    assert cache.put(8, "none", shape, 0, {"items": [3]})
    assert cache.get(7, "none", shape).payload == {"items": [1, 2]}
    assert cache.invalidate_user(7)
    after = cache.get(7, "none", shape)
    assert not after.hit and after.generation == 1
    assert cache.get(8, "none", shape).hit, "another user's entry must survive"
    assert cache._redis.ttl(cache._gen_key(7)) > 30, "generation counter outlives result entries"


def test_answer_computed_across_an_event_is_not_served(cache):
    shape = request_shape_hash({"n": 5})
    before = cache.get(9, "none", shape)  # request starts, reads generation 0
    cache.invalidate_user(9)  # event arrives while the request is computing
    cache.put(9, "none", shape, before.generation, {"items": ["stale"]})
    assert not cache.get(9, "none", shape).hit


def test_shape_hash_depends_on_every_field_but_is_order_free():
    a = request_shape_hash({"n": 5, "exclude": [1, 2], "filters": {"x": 1, "y": 2}})
    b = request_shape_hash({"filters": {"y": 2, "x": 1}, "exclude": [1, 2], "n": 5})
    assert a == b
    assert a != request_shape_hash({"n": 6, "exclude": [1, 2], "filters": {"x": 1, "y": 2}})


def test_dead_redis_is_a_fast_miss_and_never_raises():
    c = ResultCache(CacheConfig(socket_timeout_s=0.05, breaker_s=5), f"redis://127.0.0.1:{free_port()}/0")
    t0 = time.perf_counter()
    first = c.get(1, "none", "h")
    assert not first.hit and first.error
    assert not c.put(1, "none", "h", 0, {"a": 1})
    for _ in range(50):  # breaker open: no socket work at all
        assert not c.get(1, "none", "h").hit
    assert time.perf_counter() - t0 < 1.0
    assert c.invalidate_user(1) is False


def test_single_timeout_does_not_open_the_breaker(redis_url):
    import redis

    c = ResultCache(CacheConfig(breaker_timeouts=3, breaker_s=5), redis_url)
    for _ in range(2):
        c._failed("get", redis.TimeoutError("slow"))
    assert c._available(), "two slow replies are load, not an outage"
    c._failed("get", redis.TimeoutError("slow"))
    assert not c._available()
    c2 = ResultCache(CacheConfig(breaker_s=5), redis_url)
    c2._failed("get", redis.ConnectionError("refused"))
    assert not c2._available(), "a refused connection opens the breaker at once"


def test_cache_config_refuses_generation_ttl_below_result_ttl():
    with pytest.raises(ValueError, match="generation_ttl_s"):
        CacheConfig(ttl_s=100, generation_ttl_s=50)


# ---------------------------------------------------------------------------- middlewares
def _app(keys: frozenset[str], max_body: int = 1000, log_stream: io.StringIO | None = None,
         insecure: bool = False):
    api = FastAPI()
    api.router.route_class = KeyCheckedRoute
    setattr(api.state, GUARD_STATE, ApiKeyGuard(keys, insecure=insecure))

    @api.post("/admin/reload", dependencies=[Depends(require_api_key)])
    async def reload() -> dict:
        return {"ok": True}

    @api.post("/v1/events", dependencies=[Depends(require_api_key)])
    async def events(request: Request) -> dict:
        body = await request.json()
        ctx = current_request()
        ctx.user_id = body.get("user_id")
        return {"ok": True, "rid": request.state.request_id}

    @api.post("/v1/recommendations")
    async def rec(request: Request) -> dict:
        await request.body()
        ctx = current_request()
        ctx.user_id, ctx.timings, ctx.degraded = 5, {"retrieval": 0.002}, ["feature_store_unavailable"]
        return {"ok": True}

    @api.get("/healthz")
    async def health() -> dict:
        return {"status": "ok"}

    logger = logging.getLogger(f"test.access.{id(api)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(log_stream or io.StringIO())
    handler.setFormatter(JsonLogFormatter())
    logger.addHandler(handler)
    app = BodySizeLimitMiddleware(api, max_body)
    return AccessLogMiddleware(app, logger=logger)


class _SyncASGI:
    """httpx's ASGITransport is async-only; wrap calls in asyncio.run for a sync test."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        import asyncio

        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())


def test_api_key_required_on_write_endpoints_only():
    c = _SyncASGI(_app(frozenset({"s3cret", "rotated"})))
    r = c.request("POST", "/v1/events", json={"user_id": 1})
    assert r.status_code == 401 and r.json()["detail"][0]["loc"] == ["header", "x-api-key"]
    assert "required" in r.json()["detail"][0]["msg"]
    r = c.request("POST", "/v1/events", json={"user_id": 1}, headers={"X-API-Key": "nope"})
    assert r.status_code == 401 and "s3cret" not in r.text
    assert c.request("POST", "/v1/events", json={"user_id": 1}, headers={"X-API-Key": "s3cret"}).status_code == 200
    ok = c.request("POST", "/v1/events", json={"user_id": 1}, headers={"Authorization": "Bearer rotated"})
    assert ok.status_code == 200
    assert c.request("POST", "/v1/recommendations", json={}).status_code == 200, "reads stay open"
    assert c.request("POST", "/admin/reload", json={}).status_code == 401


def test_no_keys_means_closed_unless_insecure():
    r = _SyncASGI(_app(frozenset())).request("POST", "/v1/events", json={"user_id": 1})
    assert r.status_code == 401 and "no API key is configured" in r.json()["detail"][0]["msg"]
    c = _SyncASGI(_app(frozenset(), insecure=True))
    assert c.request("POST", "/v1/events", json={"user_id": 1}).status_code == 200


def test_keys_from_env_and_file(tmp_path):
    f = tmp_path / "key"
    f.write_text("from-file\nsecond\n")
    keys = load_api_keys(SecurityConfig(api_key_env="MY_KEY", api_key_file=f), {"MY_KEY": " a , b "})
    assert keys == {"a", "b", "from-file", "second"}
    assert load_api_keys(SecurityConfig(), {}) == frozenset()
    with pytest.raises(RuntimeError, match="not readable"):
        load_api_keys(SecurityConfig(api_key_file=tmp_path / "missing"), {})


def test_body_limit_refuses_before_parsing():
    c = _SyncASGI(_app(frozenset(), max_body=1000))
    r = c.request("POST", "/v1/recommendations", content=b"{" + b" " * 5000 + b"}",
                  headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"]

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 500

    r = c.request("POST", "/v1/recommendations", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.request("POST", "/v1/recommendations", json={"user_id": 1}).status_code == 200


def test_request_id_echo_and_one_json_log_line_without_secrets():
    stream = io.StringIO()
    c = _SyncASGI(_app(frozenset({"s3cret"}), log_stream=stream))
    c.request("POST", "/v1/recommendations", json={"user_id": 5}, headers={"X-Request-ID": "abc-123"})
    r2 = c.request("POST", "/v1/events", json={"user_id": 5}, headers={"X-API-Key": "s3cret"})
    assert r2.json()["rid"] == r2.headers["x-request-id"]
    c.request("POST", "/v1/recommendations", json={}, headers={"X-Request-ID": "x" * 500})
    c.request("GET", "/healthz")  # probes are not logged
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert len(lines) == 3
    rec = lines[0]
    assert rec["request_id"] == "abc-123" and rec["user_id"] == 5 and rec["status"] == 200
    assert rec["endpoint"] == "/v1/recommendations" and rec["degraded"] is True
    assert rec["stages_ms"]["retrieval"] == pytest.approx(2.0) and rec["variant"] == "none"
    assert len(lines[2]["request_id"]) == 32, "an oversized client id is replaced in logs"
    assert "s3cret" not in stream.getvalue()


def test_sanitize_request_id():
    assert sanitize_request_id("ok-1.2:3_x") == "ok-1.2:3_x"
    assert sanitize_request_id("bad id\n") != "bad id\n"
    assert sanitize_request_id("y" * 129) != "y" * 129
    assert len(sanitize_request_id(None)) == 32
