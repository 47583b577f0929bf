"""The hardened HTTP surface of a real Serve app: cache, request ids, metrics, auth, size limits, fuzzing.

One module-scoped app with the result cache on (shared Redis db 15, a private key prefix), an API
key read from a file (as a mounted Kubernetes Secret would be) and a small body limit.

Fuzzing: schemathesis generates positive and negative cases for every operation in the app's own
OpenAPI schema (bounded examples); every answer must be non-5xx — except a 503 from
``/v1/events`` when the feature store's ingestion is unavailable, a documented dependency
outage — and every 4xx must be JSON whose ``detail`` names the offending field.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest

APP, PREFIX = "recsys_hardening_api", "/hardening-api"
API_KEY = "api-test-key-" + uuid.uuid4().hex[:8]
MAX_BODY = 64 * 1024
FUZZ_EXAMPLES = 40  # per operation and generation mode: bounded (about 15 s against the 2-core CI box)


@pytest.fixture(scope="module")
def app(serve_url, app_args, deploy_app, redis_url, tmp_path_factory):
    from ray import serve

    key_file = tmp_path_factory.mktemp("secret") / "api-key"
    key_file.write_text(API_KEY + "\n")
    args = app_args(redis_url)
    args.update(
        cache={"enabled": True, "ttl_s": 300, "key_prefix": f"test:hardening:{uuid.uuid4().hex[:8]}"},
        security={"api_key_file": str(key_file)},
        limits={"max_n": 50, "max_exclude": 200, "max_body_bytes": MAX_BODY},
    )
    url = deploy_app(APP, PREFIX, args, serve_url)
    yield url
    serve.delete(APP)


@pytest.fixture(scope="module")
def client(app):
    with httpx.Client(base_url=app, timeout=30) as c:
        yield c


def _fresh_user() -> int:
    return 10_000 + uuid.uuid4().int % 10**9  # unknown to the model: cold start, never cached before


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------ request id, enrichment
def test_request_id_taken_from_header_and_returned(client):
    r = client.post("/v1/recommendations", json={"user_id": 1, "n": 3}, headers={"X-Request-ID": "trace-abc-1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "trace-abc-1" and r.json()["request_id"] == "trace-abc-1"
    r = client.post("/v1/recommendations", json={"user_id": 1, "n": 3})
    assert r.headers["x-request-id"] == r.json()["request_id"] != "trace-abc-1"


def test_items_carry_catalog_title_and_genres(client, small_dataset):
    titles = dict(zip(small_dataset.items.item_id.astype(int), small_dataset.items.title, strict=True))
    body = client.post("/v1/recommendations", json={"user_id": 2, "n": 5}).json()
    for it in body["items"]:
        assert it["title"] == titles[it["item_id"]] and it["genres"]
    item = int(small_dataset.items.item_id.iloc[0])
    sim = client.get(f"/v1/items/{item}/similar", params={"n": 3}).json()
    assert all(s["title"] == titles[s["item_id"]] for s in sim["items"])


# ------------------------------------------------------------------ result cache
def test_cache_hit_then_invalidated_by_the_users_event(client, small_dataset):
    user, other = _fresh_user(), _fresh_user()
    req = {"user_id": user, "n": 6}
    before = client.get("/metrics").text
    first = client.post("/v1/recommendations", json=req).json()
    second = client.post("/v1/recommendations", json=req).json()
    client.post("/v1/recommendations", json={"user_id": other, "n": 6})
    assert first["cached"] is False and second["cached"] is True, (first, second)
    assert [i["item_id"] for i in second["items"]] == [i["item_id"] for i in first["items"]]
    assert second["request_id"] != first["request_id"]
    assert client.post("/v1/recommendations", json={**req, "n": 5}).json()["cached"] is False, "shape is in the key"

    item = int(small_dataset.items.item_id.iloc[1])
    ev = client.post("/v1/events", json={"user_id": user, "item_id": item, "event_type": "click"},
                     headers={"X-API-Key": API_KEY})
    assert ev.status_code == 202, ev.text
    deadline = time.time() + 2  # the replica's stream consumer applies the event and bumps the generation
    while (cached := client.post("/v1/recommendations", json=req).json()["cached"]) and time.time() < deadline:
        time.sleep(0.05)
    assert cached is False, "event must invalidate"
    assert client.post("/v1/recommendations", json={"user_id": other, "n": 6}).json()["cached"] is True

    after = client.get("/metrics").text
    assert _metric(after, "recsys_cache_hits_total") - _metric(before, "recsys_cache_hits_total") >= 2
    assert _metric(after, "recsys_cache_misses_total") - _metric(before, "recsys_cache_misses_total") >= 4


# ------------------------------------------------------------------ metrics vs dashboard
def test_metrics_exported_and_dashboard_uses_only_exported_names(client, repo_root):
    client.post("/v1/recommendations", json={"user_id": 3, "n": 3})
    text = client.get("/metrics").text
    for name in ("recsys_requests_total", "recsys_request_latency_seconds_bucket",
                 "recsys_stage_latency_seconds_bucket", "recsys_candidates_bucket", "recsys_cache_hits_total",
                 "recsys_cache_misses_total", "recsys_degraded_responses_total", "recsys_stage_errors_total"):
        assert name in text or f"# TYPE {name.removesuffix('_bucket')}" in text, name
    for stage in ("retrieval", "ranking", "reranking", "hydration"):
        assert f'stage="{stage}"' in text, stage
    assert _metric(text, "recsys_requests_total", endpoint="/v1/recommendations", status="200") > 0
    assert 'variant="' in text
    dashboard = json.loads((repo_root / "helm/recsys/files/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"recsys_[a-z_]+", e)}
    assert used, "dashboard has no recsys panels"
    missing = [n for n in used if f"# TYPE {n} " not in text]
    assert not missing, f"dashboard queries metrics the app does not export: {missing}"


def test_one_json_access_log_line_per_request(client, ray_cluster):
    from pathlib import Path

    rid = "log-probe-" + uuid.uuid4().hex[:8]
    client.post("/v1/recommendations", json={"user_id": 4, "n": 3}, headers={"X-Request-ID": rid})
    logs = Path(ray_cluster._private.worker.global_worker.node.get_logs_dir_path())
    deadline, found = time.time() + 20, []
    while time.time() < deadline and not found:
        for f in logs.glob("worker-*"):
            try:
                found += [ln for ln in f.read_text(errors="replace").splitlines() if rid in ln and ln.startswith("{")]
            except OSError:
                continue
        time.sleep(0.5)
    assert len(found) == 1, found
    rec = json.loads(found[0])
    assert rec["request_id"] == rid and rec["user_id"] == 4 and rec["status"] == 200
    assert rec["variant"] and "degraded" in rec and {"retrieval", "reranking"} <= set(rec["stages_ms"])


# ------------------------------------------------------------------ auth
def test_write_endpoints_need_the_api_key(client):
    ev = {"user_id": 1, "item_id": 2, "event_type": "view"}
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        r = client.post("/v1/events", json=ev, headers=headers)
        assert r.status_code == 401 and r.json()["detail"][0]["loc"] == ["header", "x-api-key"], r.text
        assert API_KEY not in r.text
    assert client.post("/admin/reload", json={}).status_code == 401
    assert client.post("/admin/reload", json={}, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert client.post("/v1/events", json=ev, headers={"X-API-Key": API_KEY}).status_code == 202
    assert client.post("/v1/recommendations", json={"user_id": 1, "n": 2}).status_code == 200, "reads stay open"


# ------------------------------------------------------------------ size limits
def test_oversized_requests_refused_cheaply_and_named(client):
    t0 = time.perf_counter()
    r = client.post("/v1/recommendations", content=b'{"user_id": 1, "exclude": [' + b"1," * 400_000 + b"1]}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body"], r.text
    assert time.perf_counter() - t0 < 5
    r = client.post("/v1/recommendations", json={"user_id": 1, "n": 51})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "n"
    r = client.post("/v1/recommendations", json={"user_id": 1, "exclude": list(range(201))})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "exclude"
    r = client.get("/v1/items/1/similar", params={"n": 10_000})
    assert r.status_code == 422 and "n" in r.json()["detail"][0]["loc"]


# ------------------------------------------------------------------ fuzz
def _names_a_field(status: int, body: object) -> bool:
    if not isinstance(body, dict) or "detail" not in body:
        return False
    detail = body["detail"]
    if status in (404, 405, 409):  # not about one field: unknown item / method / refused reload
        return isinstance(detail, str) and bool(detail)
    return isinstance(detail, list) and bool(detail) and all(
        isinstance(d, dict) and isinstance(d.get("loc"), list) and d["loc"] for d in detail)


def _check_case(case, app: str, label: str, failures: list[str], seen: dict[str, set[int]]) -> None:
    try:
        r = case.call(base_url=app, headers={"X-API-Key": API_KEY}, timeout=30)
    except (ValueError, UnicodeError):
        return  # the client library refused to send it (e.g. a non-latin-1 header)
    except Exception as e:  # noqa: BLE001 - requests' transport errors
        failures.append(f"{label}: transport error {type(e).__name__}: {e}")
        return
    seen.setdefault(label, set()).add(r.status_code)
    if r.status_code >= 500 and not (r.status_code == 503 and case.path == "/v1/events"):
        failures.append(f"{label}: {r.status_code} for {case.as_curl_command()} -> {r.text[:300]}")
    elif 400 <= r.status_code < 500:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not _names_a_field(r.status_code, body):
            failures.append(f"{label}: {r.status_code} without a field: {r.text[:300]}")


def test_fuzz_every_operation_no_5xx_and_4xx_name_the_field(app):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{app}/openapi.json")
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in ops} >= {
        "POST /v1/recommendations", "GET /v1/items/{item_id}/similar", "POST /v1/events", "POST /admin/reload"}
    for op in ops:
        label = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = op.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case) -> None:
                _check_case(case, app, label, failures, seen)  # noqa: B023 - run() is called right here

            try:
                run()
            except Unsatisfiable:
                continue  # e.g. no negative case exists for an operation without parameters
    assert not failures, "\n".join(failures[:20])
    assert len(seen) >= 4, seen


# ------------------------------------------------------------------ degraded similar items, errors without internals
class _DeadShard:
    async def search(self, *args):
        raise ConnectionError("replica died")

    async def load(self, version):
        return version

    async def retain(self, versions):
        return versions


def test_degraded_similar_items_are_counted_and_errors_name_no_paths(app_args, redis_url, small_dataset):
    import asyncio

    from starlette.testclient import TestClient

    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    args = {**app_args(redis_url), "security": {"insecure": True}}
    cfg = ServingConfig(**args)
    svc = RecommendationService(cfg, [RetrievalShard(cfg, 0, 2), _DeadShard()], Ranker(cfg))
    asyncio.run(svc.start())
    item = int(small_dataset.items.item_id.iloc[0])
    with TestClient(create_api(svc)) as c:
        before = _metric(c.get("/metrics").text, "recsys_degraded_responses_total",
                         reason="retrieval_shard_unavailable")
        body = c.get(f"/v1/items/{item}/similar", params={"n": 5}).json()
        assert body["degraded"] and "retrieval_shard_unavailable" in body["degraded_reasons"], body
        after = _metric(c.get("/metrics").text, "recsys_degraded_responses_total",
                        reason="retrieval_shard_unavailable")
        assert after == before + 1
        r = c.post("/admin/reload", json={"retrieval_version": "no-such-version"})
        assert r.status_code == 409 and "still serving" in r.json()["detail"]
        assert str(cfg.model_store_uri) not in r.text and "/" not in r.json()["detail"].split("still serving")[0]
