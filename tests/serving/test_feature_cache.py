"""One Redis round trip per request: user row once, item features from the in-process cache.

Against a real materialized Feast repo on the real Redis: the split read (``fetch_user`` then
``fetch_items`` / ``items_from_cache``) must give the same ranker matrix as the one-shot ``fetch``,
for cached, uncached and out-of-catalog items alike, and the cache must expire after its TTL.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def materialized(small_dataset, redis_url, tmp_path_factory):
    from recsys.features.online import delete_project_keys
    from tests.features.conftest import materialized_repo

    cfg = materialized_repo(small_dataset, redis_url, tmp_path_factory.mktemp("serving_feature_repo"), "recsys_s")
    yield cfg
    delete_project_keys(cfg)


def _gateway(materialized, small_dataset, ttl_s: float):
    from recsys.serving.config import ServingConfig
    from recsys.serving.models.artifacts import Catalog
    from recsys.serving.pipeline.features.client import FeatureGateway

    cfg = ServingConfig(redis_url=materialized.redis_url, feature_repo_dir=materialized.repo_dir,
                        feature_project=materialized.project, item_feature_cache_s=ttl_s)
    gw = FeatureGateway(cfg)
    catalog = Catalog.from_items(small_dataset.items)
    assert gw.mode == "online"
    assert gw.enable_item_cache(catalog.index.lookup, len(catalog.index))
    return gw


def test_split_read_equals_one_shot_fetch(materialized, small_dataset):
    gw = _gateway(materialized, small_dataset, ttl_s=300)
    items = small_dataset.items["item_id"].to_numpy(np.int64)
    users = small_dataset.users["user_id"].to_numpy(np.int64)[:5]
    rng = np.random.default_rng(0)
    for u in users:
        cand = np.concatenate([rng.choice(items, 60, replace=False), [10**12]])  # + one id outside the catalog
        direct = gw.fetch(int(u), cand)
        user = gw.fetch_user(int(u))
        assert user.recent_item_ids == direct.recent_item_ids
        first = gw.fetch_items(int(u), user, cand)  # reads the uncached items, fills the cache
        np.testing.assert_allclose(first.items, direct.items, rtol=1e-5, atol=1e-4)
        known = cand[:-1]
        hit, refresh = gw.items_from_cache(user, known)  # every item cached now: no I/O at all
        assert hit is not None and len(refresh) == 0
        np.testing.assert_allclose(hit.items, gw.fetch(int(u), known).items, rtol=1e-5, atol=1e-4)
        assert gw.items_from_cache(user, cand)[0] is None  # the outside id is never cached
    assert np.abs(direct.items).sum() > 0  # real feature values, not all zeros


def test_stale_items_are_served_and_refreshed(materialized, small_dataset):
    """Entries older than the TTL keep serving (no round trip) and come back for a background re-read."""
    gw = _gateway(materialized, small_dataset, ttl_s=300)
    items = small_dataset.items["item_id"].to_numpy(np.int64)[:20]
    user = gw.fetch_user(int(small_dataset.users["user_id"].iloc[0]))
    assert gw.items_from_cache(user, items)[0] is None  # never cached: the caller must read them
    gw.fetch_items(0, user, items)
    hit, refresh = gw.items_from_cache(user, items)
    assert hit is not None and len(refresh) == 0
    gw.item_cache.ttl_s = 0.0  # everything is now older than the TTL
    stale_hit, refresh = gw.items_from_cache(user, items)
    assert stale_hit is not None and sorted(refresh.tolist()) == sorted(items.tolist())
    before = gw.item_cache._filled_at.copy()
    gw.refresh_items(refresh)
    assert (gw.item_cache._filled_at >= before).all() and (gw.item_cache._filled_at > before).any()


def test_snapshot_loads_the_whole_catalog_before_serving(materialized, small_dataset):
    """After ``FeatureHydration.start`` every catalog item is served from memory (no read, no refresh),
    with the one-shot fetch's values; later passes re-read the rows; a store that is down at start-up
    leaves the per-request read in place instead of failing the replica."""
    import asyncio

    from recsys.serving.config import ServingConfig
    from recsys.serving.models.artifacts import Catalog
    from recsys.serving.pipeline.features.client import FeatureGateway
    from recsys.serving.pipeline.features.item_snapshot import PassResult
    from recsys.serving.pipeline.features.stage import FeatureHydration
    from recsys.serving.pipeline.metrics import ServingMetrics

    catalog = Catalog.from_items(small_dataset.items)
    items = small_dataset.items["item_id"].to_numpy(np.int64)
    uid = int(small_dataset.users["user_id"].iloc[3])

    async def run(redis_url: str):
        cfg = ServingConfig(redis_url=redis_url, feature_repo_dir=materialized.repo_dir,
                            feature_project=materialized.project, feature_timeout_s=0.5)
        gw = FeatureGateway(cfg)
        stage = FeatureHydration(cfg, gw, ServingMetrics(), catalog)
        stage.snapshot.CHUNK = 97  # several chunks even on the small catalog
        try:
            loaded = await stage.start()
            if not loaded:
                return loaded, gw, None, None
            user = gw.fetch_user(uid)
            hit, refresh = gw.items_from_cache(user, items)
            before = gw.item_cache._filled_at.copy()
            assert await stage.snapshot.run_pass(paced=False) is PassResult.DONE
            return loaded, gw, (user, hit, refresh), before
        finally:
            await stage.stop()

    loaded, gw, (user, hit, refresh), before = asyncio.run(run(materialized.redis_url))
    assert loaded and stage_filled_everything(gw, len(items))
    assert hit is not None and len(refresh) == 0  # every catalog item, straight from memory
    np.testing.assert_allclose(hit.items, gw.fetch(uid, items).items, rtol=1e-5, atol=1e-4)
    assert (gw.item_cache._filled_at > before).all()  # the second pass re-read every row
    assert np.isinf(gw.item_cache.ttl_s)  # rows no longer expire one by one: the passes refresh them

    down, gw_down, _, _ = asyncio.run(run("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    assert down is False and gw_down.mode == "online" and gw_down.item_cache is not None
    assert not np.isfinite(gw_down.item_cache._filled_at).any()  # nothing loaded; requests read on demand


def stage_filled_everything(gw, n: int) -> bool:
    return bool(np.isfinite(gw.item_cache._filled_at).sum() == n)


def test_a_new_materialization_is_read_at_once(materialized, small_dataset):
    """``recsys features materialize`` bumps the project's counter; the snapshot loop notices it between
    paced chunks and re-reads the whole catalog at full speed instead of finishing its slow pass."""
    import asyncio
    import time

    import redis

    from recsys.features.online import materialization_key
    from recsys.serving.config import ServingConfig
    from recsys.serving.models.artifacts import Catalog
    from recsys.serving.pipeline.features.client import FeatureGateway
    from recsys.serving.pipeline.features.stage import FeatureHydration
    from recsys.serving.pipeline.metrics import ServingMetrics

    catalog = Catalog.from_items(small_dataset.items)
    # one paced pass would take ~len(catalog) / 0.5 s: only the version bump can refresh everything in time
    cfg = ServingConfig(redis_url=materialized.redis_url, feature_repo_dir=materialized.repo_dir,
                        feature_project=materialized.project, item_feature_refresh_items_per_s=0.5,
                        item_feature_version_poll_s=0.05)
    gw = FeatureGateway(cfg)
    assert gw.materialization_version() >= 1  # the fixture's materialize marked its run
    r = redis.Redis.from_url(materialized.redis_url)

    async def run():
        stage = FeatureHydration(cfg, gw, ServingMetrics(), catalog)
        stage.snapshot.CHUNK = 50
        try:
            assert await stage.start()
            first = gw.item_cache._filled_at.copy()
            await asyncio.sleep(0.3)  # the paced pass has read its first chunk and sleeps
            before = gw.item_cache._filled_at.copy()
            assert (before == first).any()  # rows the slow pass has not reached yet
            r.incr(materialization_key(materialized.project))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (gw.item_cache._filled_at > before).all():
                await asyncio.sleep(0.05)
            return before
        finally:
            await stage.stop()

    before = asyncio.run(run())
    assert (gw.item_cache._filled_at > before).all()  # every row re-read after the bump


def test_items_with_real_time_events_are_re_read_within_a_poll(materialized, small_dataset):
    """A streamed event changes an item's counters in Redis; the snapshot re-reads that item (and only the
    touched ones) at its next poll instead of waiting for the slow full pass."""
    import asyncio
    import time

    import pandas as pd

    from recsys.features import RANKER_FEATURES, ingest_event
    from recsys.serving.config import ServingConfig
    from recsys.serving.models.artifacts import Catalog
    from recsys.serving.pipeline.features.client import FeatureGateway
    from recsys.serving.pipeline.features.stage import FeatureHydration
    from recsys.serving.pipeline.metrics import ServingMetrics

    catalog = Catalog.from_items(small_dataset.items)
    items = small_dataset.items["item_id"].to_numpy(np.int64)
    uid, item = int(small_dataset.users["user_id"].iloc[2]), int(items[5])
    cfg = ServingConfig(redis_url=materialized.redis_url, feature_repo_dir=materialized.repo_dir,
                        feature_project=materialized.project, item_feature_refresh_items_per_s=0.5,
                        item_feature_version_poll_s=0.05)
    gw = FeatureGateway(cfg)
    col = RANKER_FEATURES.index("item_clicks_all")

    async def run():
        stage = FeatureHydration(cfg, gw, ServingMetrics(), catalog)
        stage.snapshot.CHUNK = 50
        try:
            assert await stage.start()
            user = gw.fetch_user(uid)
            before = gw.items_from_cache(user, np.array([item]))[0].items[0, col]
            filled = gw.item_cache._filled_at.copy()
            ts = pd.Timestamp.now(tz="UTC").isoformat()
            assert ingest_event(materialized, {"user_id": uid, "item_id": item, "event_type": "click",
                                               "timestamp": ts}).pushed
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and stage.snapshot.touched_refreshed == 0:
                await asyncio.sleep(0.05)
            after = gw.items_from_cache(user, np.array([item]))[0].items[0, col]
            return before, after, filled, stage.snapshot.touched_refreshed
        finally:
            await stage.stop()

    before, after, filled, refreshed = asyncio.run(run())
    assert after == before + 1  # the cached row now carries the streamed click
    row = catalog.index.lookup(np.array([item]))[0]
    assert gw.item_cache._filled_at[row] > filled[row]
    assert 1 <= refreshed < len(items)  # the touched items, not the catalog
