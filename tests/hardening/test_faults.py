"""Fault injection against a real Serve app under a bounded load loop (real Ray actors, real redis-server).

One app per module; its Redis (features + result cache) is a private ``redis-server`` that the
Redis test kills with SIGKILL and restarts on the same port — the shared 6379 is never touched.

Stated bounds (also in docs/operations.md):
* shard replica killed mid-load: zero 5xx / transport errors (a dead shard is a degraded 200
  answered from the other shard and the secondary sources); Serve replaces the replica and
  answers are complete again within 60 s.
* Redis killed mid-load: zero 5xx; answers during the outage carry
  ``degraded_reasons=["feature_store_unavailable"]``; within 15 s of Redis returning, answers are
  no longer degraded.
* corrupt / missing artifact at promote time: ``recsys models promote`` exits != 0 naming the file,
  PROMOTED is unchanged, and the running app keeps serving the old version (a reload attempt of a
  version that lacks a contract file answers 409 and changes nothing).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from recsys.serving.tools.loadgen import LoadMix, LoadResult, run_load_sync

APP, PREFIX = "recsys_hardening_faults", "/hardening-faults"
API_KEY = "faults-test-key"
REC_ONLY = LoadMix(recommend=0.85, similar=0.15, events=0.0, hot_users=10, cold_share=0.1)


@pytest.fixture(scope="module")
def app(serve_url, app_args, deploy_app, private_redis, tmp_path_factory):
    from ray import serve

    args = app_args(private_redis.url)
    key_file = tmp_path_factory.mktemp("secret") / "api-key"
    key_file.write_text(API_KEY)
    args.update(num_shards=2, shard_timeout_s=1.0, security={"api_key_file": str(key_file)})
    url = deploy_app(APP, PREFIX, args, serve_url)
    yield url
    serve.delete(APP)


@pytest.fixture(scope="module")
def ids(small_dataset):
    return (small_dataset.users.user_id.astype(int).tolist()[:200],
            small_dataset.items.item_id.astype(int).tolist())


def _load_in_background(url: str, ids, duration_s: float, max_requests: int,
                        seed: int) -> tuple[threading.Thread, dict]:
    out: dict[str, LoadResult] = {}

    def go() -> None:
        out["result"] = run_load_sync(url, duration_s=duration_s, max_requests=max_requests, concurrency=4,
                                      user_ids=ids[0], item_ids=ids[1], mix=REC_ONLY, seed=seed,
                                      api_key=API_KEY)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


_probe_users = itertools.count(5_000_000)


def _recommend(url: str, user: int | None = None) -> dict:
    """One recommendation; by default for a never-seen user, so the result cache cannot answer it."""
    user = next(_probe_users) if user is None else user
    r = httpx.post(f"{url}/v1/recommendations", json={"user_id": user, "n": 5}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _shard_replica_actor(app_name: str, deployment: str):
    import ray
    from ray._private import state

    for a in state.actors().values():
        if a.get("State") == "ALIVE" and a.get("ActorClassName") == f"ServeReplica:{app_name}:{deployment}":
            return ray.get_actor(a["Name"], namespace="serve")
    raise AssertionError(f"no live replica of {deployment}")


def _wait_until(pred, timeout: float, every: float = 0.25) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(every)
    return False


def test_killing_a_shard_replica_mid_load_loses_no_requests(app, ids):
    import ray

    assert not _recommend(app)["degraded"]
    thread, out = _load_in_background(app, ids, duration_s=12, max_requests=4000, seed=11)
    time.sleep(3)
    t_kill = time.time()
    ray.kill(_shard_replica_actor(APP, "RetrievalShard0"), no_restart=True)
    thread.join(timeout=60)
    res: LoadResult = out["result"]
    assert res.count > 50, res.summary()
    # bound: zero lost requests — every answer is a 200 (degraded while the shard is gone)
    assert res.errors() == 0, res.summary()
    assert set(res.status_counts()) == {200}, res.summary()
    assert res.degraded_count() > 0, "the kill had no visible effect: nothing was degraded"
    # Serve replaces the replica; complete (non-degraded) answers come back
    assert _wait_until(lambda: not _recommend(app)["degraded"], timeout=60), "shard never came back"
    last = max(s.t for s in res.samples if s.degraded) + res.started_at - t_kill
    print(f"shard kill: {res.count} requests, {res.degraded_count()} degraded, 0 errors; "
          f"last degraded answer {last:.1f}s after the kill")


def test_redis_outage_mid_load_degrades_then_recovers(app, ids, private_redis):
    thread, out = _load_in_background(app, ids, duration_s=14, max_requests=4000, seed=12)
    time.sleep(3)
    private_redis.stop()
    t_stop = time.time()
    during = _wait_until(lambda: "feature_store_unavailable" in _recommend(app)["degraded_reasons"], 5)
    time.sleep(3)
    private_redis.start()
    t_back = time.time()
    recovered = _wait_until(lambda: not _recommend(app)["degraded"], timeout=15)
    t_recovered = time.time()
    thread.join(timeout=60)
    res: LoadResult = out["result"]
    assert during, "responses during the outage must say feature_store_unavailable"
    assert recovered, "responses must stop being degraded once Redis is back"
    assert res.errors() == 0 and set(res.status_counts()) == {200}, res.summary()
    outage = [s for s in res.samples if t_stop - res.started_at <= s.t < t_back - res.started_at]
    assert outage and any(s.degraded for s in outage), res.summary()
    back = t_back - res.started_at
    first_ok = min((s.t for s in res.samples if s.t >= back and not s.degraded), default=float("nan"))
    last_bad = max((s.t + s.latency_s for s in res.samples if s.degraded), default=float("nan"))
    print(f"redis outage: {res.count} requests, {res.degraded_count()} degraded, 0 errors; first complete "
          f"answer {first_ok - back:.1f}s, last degraded answer {last_bad - back:.1f}s after Redis was back; "
          f"probe saw recovery after {t_recovered - t_back:.1f}s")


def _promote_cli(store_root: str, name: str, version: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECSYS_MODEL_STORE_URI": str(store_root)}
    exe = Path(sys.executable).with_name("recsys")  # the installed console script, as a user runs it
    return subprocess.run([str(exe), "models", "promote", name, version],
                          capture_output=True, text=True, env=env, timeout=120)


def test_corrupt_or_missing_artifact_at_promote_keeps_old_version(app, hardening_store, write_version):
    store, _ = hardening_store
    write_version(store, "v2", seed=2)
    v2_dir = store.local_path(store.get("two_tower", "v2"))
    emb = v2_dir / "item_embeddings.npy"
    data = bytearray(emb.read_bytes())
    data[-8:] = b"\xff" * 8  # bit rot in the last vector
    emb.write_bytes(bytes(data))

    r = _promote_cli(store.root, "two_tower", "v2")
    assert r.returncode != 0, r.stdout
    assert "item_embeddings.npy" in r.stderr and "corrupt" in r.stderr and "still serving: v1" in r.stderr
    assert "Traceback" not in r.stderr
    assert store.promoted("two_tower") == "v1"

    write_version(store, "v3", seed=3)
    (store.local_path(store.get("two_tower", "v3")) / "user_tower.pt").unlink()
    r = _promote_cli(store.root, "two_tower", "v3")
    assert r.returncode != 0 and "user_tower.pt" in r.stderr and "missing" in r.stderr, r.stderr
    assert store.promoted("two_tower") == "v1"

    # the app was never told anything new: a reload finds v1 still promoted and keeps it
    headers = {"X-API-Key": API_KEY}
    rel = httpx.post(f"{app}/admin/reload", json={}, headers=headers, timeout=60)
    assert rel.status_code == 200 and rel.json()["model_versions"]["retrieval"] == "v1", rel.text
    # an explicit reload of the corrupt version is refused (409) and v1 keeps serving
    rel = httpx.post(f"{app}/admin/reload", json={"retrieval_version": "v3"}, headers=headers, timeout=60)
    assert rel.status_code == 409 and "v1" in rel.json()["detail"], rel.text
    body = _recommend(app)
    assert body["model_versions"]["retrieval"] == "v1" and len(body["items"]) == 5
