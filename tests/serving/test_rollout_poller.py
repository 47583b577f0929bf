"""The promoted-version poller does nothing while nothing changed (issue 22), on a real Serve app.

The app polls every 0.4 s. While the promoted versions stay put, the replica must start no redeploy
(``recsys_rollout_redeploys_total``: calls of ``serve.run`` with a new ``user_config``) and read no
artifact (``recsys_bundle_loads_total`` stays at its start-up value). Promoting a new version must then
roll out exactly once, and again nothing after it. (Serve's ``last_deployed_time_s`` cannot count
these: it only moves for declarative deploys.)
"""

from __future__ import annotations

import time

import httpx
import pytest

APP, PREFIX, POLL_S = "recsys_poller", "/poller", 0.4


@pytest.fixture(scope="module")
def poller_store(small_dataset, tmp_path_factory):
    from tests.serving.conftest import build_store

    return build_store(small_dataset, tmp_path_factory.mktemp("poller_store"))


@pytest.fixture(scope="module")
def poller_url(serve_base_url, poller_store, redis_url, tmp_path_factory, wait_until_ready):
    from ray import serve

    from recsys.serving.app import build_app
    from tests.serving.conftest import base_args

    store, catalog = poller_store
    args = {**base_args(store, catalog, redis_url, tmp_path_factory.mktemp("poller_exp")), "num_shards": 1,
            "ingress_num_cpus": 0.1, "cache": {"enabled": False}, "reload_interval_s": POLL_S,
            "stages": {"retrieval": {"placement": "local"}}}
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, blocking=False)
    url = f"{serve_base_url}{PREFIX}"
    wait_until_ready(url)
    yield url
    serve.delete(APP)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _counts(c: httpx.Client) -> dict[str, float]:
    text = c.get("/metrics").text
    return {"loads": _metric(text, "recsys_bundle_loads_total"),
            "redeploys": _metric(text, "recsys_rollout_redeploys_total"),
            "unchanged": _metric(text, "recsys_rollout_polls_total", outcome="unchanged"),
            "changed": _metric(text, "recsys_rollout_polls_total", outcome="changed"),
            "failed": _metric(text, "recsys_rollout_polls_total", outcome="failed") +
                      _metric(text, "recsys_rollout_polls_total", outcome="refused")}


def test_poller_redeploys_and_reads_nothing_until_promoted_moves(poller_url, poller_store, write_model_version):
    store, _ = poller_store
    with httpx.Client(base_url=poller_url, timeout=30) as c:
        start = _counts(c)
        time.sleep(12 * POLL_S)
        idle = _counts(c)
        assert idle["unchanged"] >= start["unchanged"] + 5, (start, idle)  # the poller did run
        assert idle["loads"] == start["loads"] and idle["redeploys"] == 0 and idle["failed"] == 0, (start, idle)

        write_model_version(store, "v2", seed=2, promote=True)
        deadline = time.time() + 90
        while c.get("/readyz").json()["model_versions"].get("retrieval") != "v2":
            assert time.time() < deadline, "promoted v2 never rolled out"
            time.sleep(0.2)
        time.sleep(3 * POLL_S)
        moved = _counts(c)
        time.sleep(12 * POLL_S)
        after = _counts(c)
        assert moved["redeploys"] == 1 and moved["changed"] == 1 and moved["loads"] > idle["loads"], (idle, moved)
        assert after["redeploys"] == 1 and after["failed"] == 0, (moved, after)
        assert after["loads"] == moved["loads"] and after["unchanged"] >= moved["unchanged"] + 5, (moved, after)
        r = c.post("/v1/recommendations", json={"user_id": 1, "n": 3})
        assert r.status_code == 200 and r.json()["model_versions"]["retrieval"] == "v2"
