"""Fleet-wide rollout on a real Serve app with 2 replicas of every deployment.

Through handles, a reload reaches one replica per deployment; ``user_config`` reaches all of them.
After ``/admin/reload`` returns, every answer from every ingress replica must carry the new
(retrieval, ranking) pair, none degraded, and no answer during the switch may fail or mix a pair.
Every replica of every deployment is then asked (``replica_versions``) what its rollout made active:
shards and the ranker load whatever version a request names, so the answers alone cannot show that
their ``reconfigure`` ran.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.serving.conftest import background_recommendations

APP = "recsys_rollout"


@pytest.fixture(scope="module")
def rollout_store(small_dataset, tmp_path_factory):
    from tests.serving.conftest import build_store

    return build_store(small_dataset, tmp_path_factory.mktemp("rollout_store"))


@pytest.fixture(scope="module")
def rollout_url(serve_base_url, rollout_store, redis_url, tmp_path_factory, wait_until_ready):
    from ray import serve

    from recsys.serving.app import build_app
    from tests.serving.conftest import base_args

    store, catalog = rollout_store
    args = {**base_args(store, catalog, redis_url, tmp_path_factory.mktemp("rollout_exp")), "num_shards": 1,
            "shard_replicas": 2, "ranker_replicas": 2, "ingress_replicas": 2, "shard_num_cpus": 0.1,
            "ranker_num_cpus": 0.1, "ingress_num_cpus": 0.1, "cache": {"enabled": False},
            "stages": {"ranking": {"placement": "deployment"}}}  # the Ranker deployment gets the rollout too
    serve.run(build_app(args), name=APP, route_prefix="/rollout", blocking=False)
    url = f"{serve_base_url}/rollout"
    wait_until_ready(url)
    yield url
    serve.delete(APP)


def _every_replica(deployment: str, rounds: int = 40) -> dict[str, dict]:
    """``replica_versions`` of every RUNNING replica of ``deployment``, keyed by replica id.

    A handle call reaches one replica (chosen by Serve's router), so calls go out in concurrent
    batches until as many distinct replicas answered as ``serve.status()`` lists as running.
    """
    from ray import serve

    running = serve.status().applications[APP].deployments[deployment].replica_states.get("RUNNING", 0)
    handle = serve.get_deployment_handle(deployment, app_name=APP)
    seen: dict[str, dict] = {}
    for _ in range(rounds):
        for resp in [handle.replica_versions.remote() for _ in range(8)]:
            v = resp.result(timeout_s=60)
            seen[v["replica"]] = v
        if len(seen) >= running:
            break
    assert running == 2 and len(seen) == running, (deployment, running, sorted(seen))
    return seen


def _assert_every_replica_on(version: str) -> None:
    """Every replica of the ingress, the shard and the ranker has ``version`` active (and loaded)."""
    for name, v in _every_replica("Ingress").items():
        assert (v["active"]["retrieval"], v["active"].get("ranking")) == (version, version), ("Ingress", name, v)
        assert version in v["loaded"], ("Ingress", name, v)
    for deployment in ("RetrievalShard0", "Ranker"):
        for name, v in _every_replica(deployment).items():
            assert v["active"] == version and version in v["loaded"], (deployment, name, v)


def _pair(body: dict) -> tuple[str, str]:
    v = body["model_versions"]
    return v["retrieval"], v.get("ranking", "")


def test_rollout_reaches_every_replica_with_one_pair(rollout_url, rollout_store, small_dataset, write_model_version):
    from ray import serve

    store, _ = rollout_store
    users = [int(u) for u in small_dataset.users.user_id.iloc[:40]]
    with httpx.Client(base_url=rollout_url, timeout=30) as c:
        # both ingress replicas start on v1
        before = [c.post("/v1/recommendations", json={"user_id": u, "n": 5}) for u in users[:10]]
        assert all(r.status_code == 200 for r in before)
        assert {_pair(r.json()) for r in before} == {("v1", "v1")}
        _assert_every_replica_on("v1")

        seen, failures = [], []

        def record(r) -> None:
            if isinstance(r, httpx.HTTPError) or r.status_code != 200:
                failures.append(r if isinstance(r, httpx.HTTPError) else r.status_code)
            else:
                seen.append((_pair(r.json()), r.json()["degraded"]))

        def body(i: int) -> dict:  # every user in turn: requests spread over both ingress replicas
            return {"user_id": users[i % len(users)], "n": 5}

        with background_recommendations(rollout_url, body, record):
            time.sleep(1.0)
            write_model_version(store, "v2", seed=2)  # writes + promotes every model
            r = c.post("/admin/reload", json={})
            assert r.status_code == 200, r.text
            assert r.json()["changed"] is True and r.json()["model_versions"]["retrieval"] == "v2"
            time.sleep(1.0)
        assert not failures, failures[:5]
        # during the switch: only whole pairs, never v1 retrieval with a v2 ranker or the reverse
        assert {p for p, _ in seen} <= {("v1", "v1"), ("v2", "v2")}
        # and the traffic really spanned the switch: both pairs were answered while it ran
        assert {p for p, _ in seen} == {("v1", "v1"), ("v2", "v2")}, sorted({p for p, _ in seen})
        assert not any(d for _, d in seen), "an answer during the rollout was degraded"

        # after the switch: every replica (many requests spread over both ingress replicas) serves v2
        after = [c.post("/v1/recommendations", json={"user_id": u, "n": 5}) for u in users]
        assert all(r.status_code == 200 for r in after)
        assert {_pair(r.json()) for r in after} == {("v2", "v2")}
        assert not any(r.json()["degraded"] for r in after)

    # every replica of every deployment got the spec (user_config is per deployment, not per handle call):
    # each one, asked directly, reports v2 as what its reconfigure made active
    deployments = serve.status().applications[APP].deployments
    assert {name for name in deployments} == {"Ingress", "RetrievalShard0", "Ranker"}
    assert all(d.status == "HEALTHY" for d in deployments.values())
    _assert_every_replica_on("v2")
