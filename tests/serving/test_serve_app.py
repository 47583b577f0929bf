"""The real Serve application over HTTP: shape, limits, filters, diversity, cold start, hot swap, degradation.

One module-scoped deployment of two apps: the normal one at "/" and one whose redis_url points at a
closed port (feature store down) at "/degraded" — the shared Redis is never stopped.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.serving.conftest import background_recommendations

APP, DEGRADED_APP = "recsys_test", "recsys_degraded"


@pytest.fixture(scope="module")
def app_url(serve_base_url, serving_args, closed_port_redis_url, wait_until_ready):
    from ray import serve

    from recsys.serving.app import build_app

    serve.run(build_app(serving_args), name=APP, route_prefix="/", blocking=False)
    degraded = {**serving_args, "redis_url": closed_port_redis_url, "num_shards": 1}
    serve.run(build_app(degraded), name=DEGRADED_APP, route_prefix="/degraded", blocking=False)
    wait_until_ready(serve_base_url)
    wait_until_ready(f"{serve_base_url}/degraded")
    yield serve_base_url
    for name in (APP, DEGRADED_APP):
        serve.delete(name)


@pytest.fixture(scope="module")
def client(app_url):
    with httpx.Client(base_url=app_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def catalog(small_dataset):
    items = small_dataset.items
    return {int(i): set(str(g).split("|")) for i, g in zip(items.item_id, items.genres, strict=True)}


def test_health_ready_docs_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["model_versions"]["retrieval"] == "v1"
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/v1/recommendations" in schema["paths"]
    client.post("/v1/recommendations", json={"user_id": 1, "n": 3})
    text = client.get("/metrics").text
    assert "recsys_stage_latency_seconds" in text and "recsys_requests_total" in text


def test_response_shape_and_n(client, small_dataset):
    user = int(small_dataset.users.user_id.iloc[3])
    r = client.post("/v1/recommendations", json={"user_id": user, "n": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"request_id", "user_id", "items", "model_versions", "degraded", "degraded_reasons",
                         "experiment", "variant"}
    assert r.headers["X-Request-ID"] == body["request_id"]
    assert len(body["items"]) == 7
    ids = [it["item_id"] for it in body["items"]]
    assert len(set(ids)) == 7
    assert [it["rank"] for it in body["items"]] == list(range(7))
    assert body["model_versions"]["retrieval"] == "v1" and body["model_versions"]["ranking"] == "v1"
    # features are read for real from the (empty) test Redis db; an outage would say feature_store_unavailable
    assert body["degraded"] is False and body["degraded_reasons"] == [], body["degraded_reasons"]
    assert all(it["sources"] for it in body["items"])


def test_no_seen_and_excluded_items(client, small_dataset):
    items = small_dataset.items.item_id.astype(int).tolist()
    history, exclude = items[:8], items[8:40]
    r = client.post("/v1/recommendations",
                    json={"user_id": 5, "n": 20, "history": history, "exclude": exclude}).json()
    got = {it["item_id"] for it in r["items"]}
    assert len(got) == 20
    assert not got & set(history) and not got & set(exclude)


def test_filters_and_genre_cap(client, catalog, small_dataset):
    unavailable = set(small_dataset.items.item_id[~small_dataset.items.available].astype(int))
    genre = sorted({g for gs in catalog.values() for g in gs})[0]
    r = client.post("/v1/recommendations", json={
        "user_id": 9, "n": 10, "filters": {"exclude_genres": [genre]},
        "diversity": {"max_per_genre": 2, "genre_window": 5, "mmr_lambda": 0.7},
    }).json()
    ids = [it["item_id"] for it in r["items"]]
    assert len(ids) == 10
    assert all(genre not in catalog[i] for i in ids)
    assert not set(ids) & unavailable
    counts: dict[str, int] = {}
    for i in ids[:5]:
        for g in catalog[i]:
            counts[g] = counts.get(g, 0) + 1
    assert max(counts.values()) <= 2
    inc = client.post("/v1/recommendations", json={"user_id": 9, "n": 5,
                                                   "filters": {"include_genres": [genre]}}).json()
    assert inc["items"] and all(genre in catalog[it["item_id"]] for it in inc["items"])


def test_cold_start_user_gets_results(client):
    r = client.post("/v1/recommendations", json={"user_id": 987654321, "n": 10}).json()
    assert r["cold_start"] is True and len(r["items"]) == 10


@pytest.mark.parametrize(
    "body,field",
    [
        ({"n": 5}, "user_id"),
        ({"user_id": "abc"}, "user_id"),
        ({"user_id": 1, "n": 0}, "n"),
        ({"user_id": 1, "n": 10_000}, "n"),
        ({"user_id": 1, "exclude": list(range(5000))}, "exclude"),
        ({"user_id": 1, "exclude": ["x"]}, "exclude"),
        ({"user_id": 1, "filters": {"available_only": "maybe"}}, "available_only"),
        ({"user_id": 1, "diversity": {"mmr_lambda": 3}}, "mmr_lambda"),
        ({"user_id": 1, "bogus": 1}, "bogus"),
    ],
)
def test_invalid_bodies_name_the_field(client, body, field):
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422, r.text
    locs = [str(x) for d in r.json()["detail"] for x in d["loc"]]
    assert field in locs


def test_malformed_json_and_wrong_types_are_4xx(client):
    r = client.post("/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.post("/v1/recommendations", json=[1, 2]).status_code == 422
    assert client.get("/v1/items/abc/similar").status_code == 422
    r = client.get("/v1/items/1/similar", params={"n": 100_000})
    assert r.status_code == 422 and "n" in str(r.json())


def test_similar_items_and_unknown_item(client, small_dataset):
    item = int(small_dataset.items.item_id.iloc[0])
    r = client.get(f"/v1/items/{item}/similar", params={"n": 5}).json()
    assert len(r["items"]) == 5 and item not in [it["item_id"] for it in r["items"]]
    r = client.get("/v1/items/99999999/similar")
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_events_bad_event_names_field(client):
    r = client.post("/v1/events", json={"user_id": 1, "item_id": 2, "event_type": "hover"})
    assert r.status_code == 422 and "event_type" in str(r.json()["detail"])
    r = client.post("/v1/events", json={"user_id": 1, "item_id": 2, "event_type": "click"})
    assert r.status_code == 202, r.text  # Redis is up: accepted (503 means the event log could not be written)


def test_redis_down_still_200_with_degraded_flag(app_url):
    r = httpx.post(f"{app_url}/degraded/v1/recommendations", json={"user_id": 3, "n": 5}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["degraded"] is True and "feature_store_unavailable" in body["degraded_reasons"]
    assert len(body["items"]) == 5


def test_hot_swap_keeps_answering(client, app_url, serving_store, write_model_version):
    store, _ = serving_store
    failures: list[str] = []
    versions: list[str] = []

    def record(r) -> None:
        if isinstance(r, httpx.HTTPError):
            failures.append(repr(r))
        elif r.status_code != 200 or len(r.json()["items"]) != 5:
            failures.append(f"{r.status_code}: {r.text[:200]}")
        else:
            versions.append(r.json()["model_versions"]["retrieval"])

    with background_recommendations(app_url, lambda i: {"user_id": 11, "n": 5}, record):
        time.sleep(1.0)
        write_model_version(store, "v2", seed=2)  # writes + promotes every model
        r = client.post("/admin/reload")
        assert r.status_code == 200, r.text
        assert r.json()["changed"] is True and r.json()["model_versions"]["retrieval"] == "v2"
        time.sleep(1.5)
    assert not failures, failures[:3]
    assert "v1" in versions and versions[-1] == "v2"
    assert client.post("/admin/reload").json()["changed"] is False


def test_recommend_cli_prints_table_and_fails_cleanly(app_url):
    from click.testing import CliRunner

    from recsys.serving.cli.recommend import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["42", "--n", "4", "--url", app_url])
    assert res.exit_code == 0, res.output
    assert "item_id" in res.output and "models: retrieval=" in res.output
    assert len([line for line in res.output.splitlines() if line.strip()[:1].isdigit()]) == 4
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    res = runner.invoke(cli, ["42", "--url", f"http://127.0.0.1:{dead}"])
    assert res.exit_code == 2 and "cannot reach" in res.output and "Traceback" not in res.output


def test_serve_cli_status_reports_deployments(app_url):
    from click.testing import CliRunner

    from recsys.serving.cli.serve import cli

    res = CliRunner().invoke(cli, ["status", "--json", "--app", APP])
    assert res.exit_code == 0, res.output
    deployments = set(json.loads(res.output)["deployments"])
    assert {"Ingress", "RetrievalShard0", "RetrievalShard1"} <= deployments
    assert "Ranker" not in deployments  # stages.ranking.placement defaults to local: scored in the ingress
    res = CliRunner().invoke(cli, ["status", "--app", "no_such_app"])
    assert res.exit_code == 2 and "not deployed" in res.output
