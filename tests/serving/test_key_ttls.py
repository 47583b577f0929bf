"""Every Redis key the platform writes for one user or one item expires (issue 22: bounded state).

Why: a key per user or per item without a TTL grows Redis with every user who ever came by, so the
30-day soak's memory never flattens (the materialize-written seen set ``:sb`` had none). This runs the
real flow on the real Redis - materialization (Feast rows + seen sets), recommendations through the
app (result cache, exposures, a LinUCB variant), events with client ids applied by the replica's
stream consumer, a click rewarding LinUCB - then scans every key of the flow: each per-user/per-item
key must carry a TTL. The only keys allowed without one are shared ones (the stream and its side keys,
the touched-items index, LinUCB's shared model) and Feast's item rows,
which are bounded by the catalog, not by time. Any other key without a TTL fails the test by name.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

# keys that exist once per deployment, with no TTL on purpose (P = the Feast project, L = LinUCB's key)
SHARED = {"recsys:rt:P:{P:events}", "recsys:rt:P:{P:events}:dlq", "recsys:rt:P:{P:events}:inv",
          "recsys:rt:P:touched", "{L}:state"}
# what the flow must have written (C = the result cache's prefix, N = an id, E = a client event id)
WANTED = {"feast user row", "recsys:rt:P:{u:N}", "recsys:rt:P:{u:N}:sb", "recsys:rt:P:{u:N}:s", "recsys:rt:P:{u:N}:r",
          "recsys:rt:P:{u:N}:seen:E", "recsys:rt:P:{i:N}", "C:gen:{u:N}", "{L}:pending:N:N"}


async def _flow(cfg, n_users: int) -> dict[int, int]:
    import httpx

    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    app = create_api(svc)
    shown: dict[int, int] = {}
    async with app.router.lifespan_context(app):
        await svc.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            for user in range(1, n_users + 1):
                r = await c.post("/v1/recommendations", json={"user_id": user, "n": 5})
                assert r.status_code == 200, r.text
                items = r.json()["items"]
                slot = [it["item_id"] for it in items if "linucb" in it["sources"]]
                other = [it["item_id"] for it in items if "linucb" not in it["sources"]]
                # odd users click LinUCB's item (a reward: its parked impression is consumed), even users another
                # one (the impression stays parked, with its TTL)
                shown[user] = slot[0] if slot and user % 2 else other[0]
            events = [{"user_id": u, "item_id": i, "event_type": "click", "event_id": uuid.uuid4().hex}
                      for u, i in shown.items()]
            r = await c.post("/v1/events", json=events)
            assert r.status_code == 202, r.text
            assert app.state.events.consumer.drain(20)
            assert svc.exploration.rewards.join(10)
    return shown


@pytest.mark.timeout(300)
def test_every_per_user_and_per_item_key_has_a_ttl(small_dataset, serving_args, redis_url, tmp_path_factory):
    import redis

    from recsys.features.online import delete_project_keys
    from recsys.serving.config import ServingConfig
    from tests.features.conftest import materialized_repo

    feat = materialized_repo(small_dataset, redis_url, tmp_path_factory.mktemp("ttl_repo"), "recsys_ttl")
    exp = tmp_path_factory.mktemp("ttl_exp") / "experiments.yaml"
    exp.write_text("version: 1\nexperiments:\n  - name: explore\n    variants:\n      - {name: control, weight: 50}\n"
                   "      - {name: bandit, weight: 50, reranking: {exploration: linucb, exploration_rate: 0.9}}\n")
    tag = uuid.uuid4().hex[:8]
    cache_prefix, lin = f"test:rc{tag}", f"test:linucb{tag}"
    cfg = ServingConfig(**{**serving_args, "feature_repo_dir": feat.repo_dir, "feature_project": feat.project,
                           "feature_timeout_s": 5.0, "experiments_config": str(exp), "exploration_rate": 1.0,
                           "exploration_max_rate": 0.5, "exploration_slot": 1, "catalog_poll_s": 0,
                           "cache": {"enabled": True, "key_prefix": cache_prefix},
                           "linucb": {"key": lin, "refresh_s": 0}})
    r = redis.Redis.from_url(redis_url)
    try:
        asyncio.run(_flow(cfg, 40))
        mine = {k for k in r.scan_iter(count=1000)
                if k.endswith(feat.project.encode()) or k.startswith((f"recsys:rt:{feat.project}:".encode(),
                                                                      cache_prefix.encode(), f"{{{lin}}}".encode()))}
        kinds: dict[str, int] = {}
        missing = []
        for k in sorted(mine):
            name = k.decode(errors="replace")
            feast_row = k.endswith(feat.project.encode())
            if feast_row and b"item_id" in k:
                continue  # Feast item rows: one per catalog item, bounded by the catalog
            kind = name.replace(feat.project, "P").replace(cache_prefix, "C").replace(lin, "L")
            kind = "feast user row" if feast_row else re.sub(r"\d+", "N", re.sub(r":seen:[0-9a-f]+$", ":seen:E", kind))
            if kind in SHARED:
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
            if r.ttl(k) < 0:
                missing.append(kind if feast_row else name)
        assert not missing, f"{len(missing)} per-user/per-item keys without a TTL, e.g. {sorted(set(missing))[:10]}"
        # the flow really wrote every kind of key this test is about
        assert set(kinds) >= WANTED, f"kinds not written by the flow: {sorted(WANTED - set(kinds))}; got {kinds}"
    finally:
        delete_project_keys(feat)
        for pattern in (f"{cache_prefix}*", f"{{{lin}}}*"):
            keys = list(r.scan_iter(match=pattern, count=1000))
            if keys:
                r.delete(*keys)
