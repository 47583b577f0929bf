"""Soak (slow; `pytest -m slow tests/hardening/test_soak.py`): 10 minutes of the realistic mix, then the
memory bound of docs/operations.md — no Serve actor's RSS (the app's replicas, Serve's controller and proxy)
grows by more than max(64 MiB, 15 %) between the end of a warm-up and the end of the soak, and no recommendation fails.

The same check as ``python benchmarks/load_soak.py --soak-minutes 10``, but on the test session's
cluster and app fixtures; ``RECSYS_SOAK_MINUTES`` shortens it for a quick look.
"""

from __future__ import annotations

import os

import pytest

from recsys.serving.tools.loadgen import LoadMix, actor_rss, run_load_sync

APP, PREFIX = "recsys_hardening_soak", "/hardening-soak"
SERVE_ACTORS = ("ServeReplica", "ServeController", "ProxyActor")
SOAK_MINUTES = float(os.environ.get("RECSYS_SOAK_MINUTES", "10"))


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_MINUTES * 60) + 600)  # the soak itself + deploy and warm-up (the default 600 s < 10 min)
def test_soak_memory_stays_within_bound(serve_url, app_args, deploy_app, redis_url, small_dataset):
    from ray import serve

    minutes = SOAK_MINUTES
    args = app_args(redis_url)
    args.update(cache={"enabled": True, "key_prefix": f"test:soak:{os.getpid()}"}, exploration_rate=0.1)
    url = deploy_app(APP, PREFIX, args, serve_url)
    users = small_dataset.users.user_id.astype(int).tolist()
    items = small_dataset.items.item_id.astype(int).tolist()
    common = {"concurrency": 8, "user_ids": users, "item_ids": items, "mix": LoadMix()}
    try:
        run_load_sync(url, duration_s=30, max_requests=100_000, seed=1, **common)
        before = actor_rss(SERVE_ACTORS)
        res = run_load_sync(url, duration_s=minutes * 60, max_requests=10_000_000, seed=2, **common)
        after = actor_rss(SERVE_ACTORS)
    finally:
        serve.delete(APP)
    summary = res.summary()
    print(f"soak {minutes:g} min: {summary}")
    rec = [s for s in res.samples if s.kind != "events"]
    assert rec and all(s.status == 200 for s in rec), summary
    # this app's replicas and Serve's own actors (controller, proxy); other apps' replicas may come and go
    checked = {k: b for k, b in before.items() if APP in k or k.startswith(("ServeController", "ProxyActor"))}
    kinds = {k.split("#")[0] for k in checked}
    assert any(APP in k for k in kinds) and any(k.startswith("ServeController") for k in kinds) and any(
        k.startswith("ProxyActor") for k in kinds), f"nothing to check the bound on: {sorted(before)}"
    problems = []
    for key, b in checked.items():
        a = after.get(key)
        if a is None:
            problems.append(f"{key}: gone at the end (replica died or was replaced)")
            continue
        bound = max(64 * 2**20, 0.15 * b)
        print(f"{key}: {b / 2**20:.1f} -> {a / 2**20:.1f} MiB")
        if a - b > bound:
            problems.append(f"{key}: +{(a - b) / 2**20:.1f} MiB > {bound / 2**20:.0f} MiB")
    assert not problems, problems
