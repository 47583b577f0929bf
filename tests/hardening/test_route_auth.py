"""Every write/admin route needs the API key, whatever the ``root_path``, before its body is parsed.

The routes are enumerated from the real app (``create_api`` over a real service and Redis), so a write
route added later without the key dependency fails here. Each is called with no key, a wrong key and
the right key, under the root paths Serve and reverse proxies hand the app ("", "/", "/api"), with
bodies that do not parse: without a valid key the answer is 401 (never 422, which would mean the body
was parsed first); with the key it is a 4xx naming the body, which proves the route was really reached.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

KEY = "route-key-" + uuid.uuid4().hex[:8]
KEY_ENV = "RECSYS_TEST_ROUTE_AUTH_KEY"
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ROOT_PATHS = ("", "/", "/api")
OPEN_WRITES = {("POST", "/v1/recommendations")}
"""Writes that stay open by default (documented in docs/serving.md: a recommendation request writes an
exposure log line and bandit state); ``security.recommendations_need_key`` closes it (tested below)."""


def _build_app(app_args, redis_url, **security):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**{**app_args(redis_url), "security": {"api_key_env": KEY_ENV, **security}})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, 0, 2), RetrievalShard(cfg, 1, 2)], Ranker(cfg))
    return create_api(svc)


def _api_routes(routes):
    """Every APIRoute, including those of included routers (FastAPI 0.165 keeps those behind a wrapper)."""
    from fastapi.routing import APIRoute

    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            assert not getattr(route.include_context, "prefix", ""), "router prefixes: extend _api_routes"
            yield from _api_routes(inner.routes)


def _is_write(method: str, path: str) -> bool:
    return method in WRITE_METHODS or path.startswith("/admin")


def _write_routes(app) -> list[tuple[str, str]]:
    out = [(m, r.path) for r in _api_routes(app.routes) for m in sorted(r.methods) if _is_write(m, r.path)]
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops if _is_write(m.upper(), p)}
    assert documented <= set(out), f"write operations the route walk missed: {documented - set(out)}"
    return [(m, p.replace("{item_id}", "1")) for m, p in out]


def _call(app, root: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.request(method, root.rstrip("/") + path, content=body,
                                   headers={"content-type": "application/json", **headers})

    return asyncio.run(go())


@pytest.fixture(scope="module")
def keyed_app(app_args, redis_url):
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, KEY)
    yield _build_app(app_args, redis_url)
    mp.undo()


def test_every_write_route_declares_the_key_dependency(keyed_app):
    from recsys.serving.http.auth import KeyCheckedRoute, require_api_key

    routes = _write_routes(keyed_app)
    assert {("POST", "/v1/events"), ("POST", "/v1/items"), ("POST", "/admin/reload")} <= set(routes), routes
    unguarded = []
    for route in _api_routes(keyed_app.routes):
        writes = [(m, route.path) for m in route.methods if _is_write(m, route.path)]
        if not writes or all(w in OPEN_WRITES for w in writes):
            continue
        if require_api_key not in {d.call for d in route.dependant.dependencies}:
            unguarded.append(route.path)
        elif not isinstance(route, KeyCheckedRoute):
            unguarded.append(f"{route.path} (checked only after the body is parsed: not a KeyCheckedRoute)")
    assert not unguarded, f"write/admin routes without the API-key dependency: {unguarded}"


@pytest.mark.parametrize("root", ROOT_PATHS)
def test_write_routes_refuse_requests_without_the_key_before_parsing_the_body(keyed_app, root):
    failures = []
    for method, path in _write_routes(keyed_app):
        if (method, path) in OPEN_WRITES:
            continue
        for body in (b"{not json", b"[1, 2, 3]", b'{"items": "nope"}'):
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
                r = _call(keyed_app, root, method, path, body, headers)
                if r.status_code != 401 or r.json()["detail"][0]["loc"] != ["header", "x-api-key"]:
                    failures.append(f"{method} {root!r}+{path} {headers} {body!r}: {r.status_code} {r.text[:120]}")
        # the right key reaches the route: the same bad body is now refused by the body parser, naming it
        r = _call(keyed_app, root, method, path, b"[1, 2, 3]", {"X-API-Key": KEY})
        if not (400 <= r.status_code < 500 and r.status_code != 401 and r.json()["detail"][0]["loc"][0] == "body"):
            failures.append(f"{method} {root!r}+{path} with the key: {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)
    assert KEY not in "\n".join(failures)


def test_open_writes_stay_open_by_default_and_close_when_configured(keyed_app, app_args, redis_url):
    for root in ROOT_PATHS:
        r = _call(keyed_app, root, "POST", "/v1/recommendations", b"[1]", {})
        assert r.status_code == 422, (root, r.status_code, r.text)  # reached the body parser: open
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, KEY)
    try:
        closed = _build_app(app_args, redis_url, recommendations_need_key=True)
    finally:
        mp.undo()
    for root in ROOT_PATHS:
        r = _call(closed, root, "POST", "/v1/recommendations", b"{not json", {})
        assert r.status_code == 401, (root, r.status_code, r.text)
        r = _call(closed, root, "POST", "/v1/recommendations", b"[1]", {"X-API-Key": KEY})
        assert r.status_code == 422, (root, r.status_code, r.text)


def test_no_key_configured_means_closed_unless_insecure(app_args, redis_url, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    closed = _build_app(app_args, redis_url)
    r = _call(closed, "/", "POST", "/v1/events", b"{}", {})
    assert r.status_code == 401 and "no API key is configured" in r.json()["detail"][0]["msg"]
    opened = _build_app(app_args, redis_url, insecure=True)
    r = _call(opened, "/", "POST", "/v1/events", b"[1, 2, 3]", {})
    assert r.status_code == 422, r.text


def test_recommendations_rate_limit_per_client(app_args, redis_url, monkeypatch):
    from recsys.serving.http.rate_limit import ClientRateLimiter

    bucket = ClientRateLimiter(rate_per_s=2.0, burst=3)
    assert [bucket.acquire(b"a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire(b"a", now=0.0) == pytest.approx(0.5)
    assert bucket.acquire(b"b", now=0.0) == 0.0, "clients have their own buckets"
    assert bucket.acquire(b"a", now=1.0) == 0.0, "tokens refill at the rate"

    monkeypatch.setenv(KEY_ENV, KEY)
    limited = _build_app(app_args, redis_url, recommendations_per_client_per_s=0.01, recommendations_burst=2)
    codes = [_call(limited, "", "POST", "/v1/recommendations", b"[1]", {"X-API-Key": "client-a"}).status_code
             for _ in range(3)]
    assert codes == [422, 422, 429], codes  # the third is refused before its body is parsed
    r = _call(limited, "", "POST", "/v1/recommendations", b"[1]", {"X-API-Key": "client-a"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["detail"][0]["type"] == "rate_limited"
    assert _call(limited, "", "POST", "/v1/recommendations", b"[1]", {"X-API-Key": "client-b"}).status_code == 422
