"""The fast online writer (default engine) writes Feast's exact bytes; incremental runs write only what changed."""

from __future__ import annotations

import shutil
import uuid

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis

from recsys.features import FeatureStoreConfig, apply, materialize
from recsys.features.offline import load_metadata
from recsys.features.online import RedisLayout, delete_project_keys
from recsys.features.realtime import OverlayKeys
from recsys.features.repo.definitions import TIMESTAMP_FIELD, USER_TABLE
from recsys.features.schema import USER_STATS_VIEW, VIEW_FEATURES


@pytest.fixture
def repo_copy(feature_cfg, tmp_path):
    """A copy of the built offline tables under a fresh Feast project (applied, nothing materialized)."""
    shutil.copytree(feature_cfg.offline_dir, tmp_path / "offline")
    cfg = FeatureStoreConfig(**{**feature_cfg.model_dump(), "repo_dir": tmp_path,
                                "project": f"recsys_t{uuid.uuid4().hex[:8]}",
                                "event_log_path": tmp_path / "log" / "events.jsonl"})
    apply(cfg)
    yield cfg
    delete_project_keys(cfg)


def _hashes(cfg: FeatureStoreConfig, keys: list[bytes]) -> list[dict]:
    with redis.Redis(**cfg.redis_kwargs()) as r, r.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.hgetall(k)
        return pipe.execute()


def test_inline_writer_writes_the_same_bytes_as_feasts_engine(feature_cfg, repo_copy, small_dataset):
    """Every user and item hash (all fields, timestamps included) equals what Feast's local engine wrote."""
    stats = materialize(repo_copy, progress=False, engine="feast")
    assert stats.rows > 0
    users = small_dataset.users.user_id.tolist()
    items = small_dataset.items.item_id.tolist()
    feast_layout, ours_layout = RedisLayout(repo_copy.project), RedisLayout(feature_cfg.project)
    for join_key, ids in (("user_id", users), ("item_id", items)):
        by_feast = _hashes(repo_copy, [feast_layout.key(join_key, i) for i in ids])
        by_ours = _hashes(feature_cfg, [ours_layout.key(join_key, i) for i in ids])  # default engine: inline
        assert all(by_feast), f"Feast wrote no row for some {join_key}"
        for i, f, o in zip(ids, by_feast, by_ours, strict=True):
            assert o == f, f"{join_key} {i}: fields differ: {sorted(set(f.items()) ^ set(o.items()))[:4]}"


def test_incremental_run_writes_only_changed_entities_and_reads_are_right(repo_copy):
    cfg = repo_copy
    last = pd.Timestamp(load_metadata(cfg)["last_snapshot"])
    day_before = last - pd.Timedelta(days=1)
    first = materialize(cfg, end=day_before.to_pydatetime(), progress=False)
    assert first.rows > 0 and first.seen_users > 0

    users = pq.read_table(cfg.offline_dir / USER_TABLE, columns=["user_id", TIMESTAMP_FIELD]).to_pandas()
    ts = users[TIMESTAMP_FIELD]
    changed = set(users.loc[(ts > day_before) & (ts <= last), "user_id"])
    unchanged = sorted(set(users["user_id"]) - changed)
    assert changed and unchanged, "the fixture data must have both changed and unchanged users on the last day"
    # Remove one unchanged user's feature row and seen set: an incremental run must not rewrite them.
    layout, overlay, probe = RedisLayout(cfg.project), OverlayKeys(cfg.project), int(unchanged[0])
    with redis.Redis(**cfg.redis_kwargs()) as r:
        r.delete(layout.key("user_id", probe), overlay.seen_batch(probe))

    inc = materialize(cfg, incremental=True, progress=False)
    assert inc.start == day_before.to_pydatetime()
    assert inc.rows_by_view[USER_STATS_VIEW] == len(changed)
    assert 0 < inc.seen_users < first.seen_users
    with redis.Redis(**cfg.redis_kwargs()) as r:
        assert not r.exists(layout.key("user_id", probe)), "an unchanged user was rewritten"
        assert not r.exists(overlay.seen_batch(probe)), "an unchanged user's seen set was rewritten"

    # Feast's own online read returns the last snapshot's values for the changed users.
    from recsys.features.store import feature_store

    sample = sorted(changed)[:5]
    names = [n for n, kind in VIEW_FEATURES[USER_STATS_VIEW].items() if not kind.endswith("[]")]
    got = feature_store(cfg).get_online_features(
        features=[f"{USER_STATS_VIEW}:{n}" for n in names], entity_rows=[{"user_id": int(u)} for u in sample],
    ).to_df().set_index("user_id")
    table = pq.read_table(cfg.offline_dir / USER_TABLE, columns=["user_id", TIMESTAMP_FIELD, *names]).to_pandas()
    latest = table[table[TIMESTAMP_FIELD] <= last].sort_values(TIMESTAMP_FIELD).groupby("user_id").last()
    for n in names:
        np.testing.assert_allclose(got.loc[sample, n].to_numpy(float), latest.loc[sample, n].to_numpy(float),
                                   rtol=1e-6, err_msg=n)

    again = materialize(cfg, incremental=True, progress=False)  # nothing new since the watermark
    assert again.rows == 0 and again.seen_users == 0


def test_unknown_engine_is_a_clear_error(repo_copy):
    from recsys.features import FeatureStoreError

    with pytest.raises(FeatureStoreError, match="engine must be one of"):
        materialize(repo_copy, progress=False, engine="spark")
