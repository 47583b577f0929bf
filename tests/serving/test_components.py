"""Plain-class tests (no Ray): shard merge, ANN kinds, MMR, genre caps, filters, candidates, exploration,
ranker inputs/batching, config, and the API in-process (experiments, degraded features, exploration)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from starlette.testclient import TestClient


# ---------------------------------------------------------------------------- ANN + merge
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_merge_topk_is_global_topk_over_disjoint_shards():
    from recsys.serving.pipeline.candidates.ann import AnnParams, FaissShard, merge_topk, shard_rows

    rng = np.random.default_rng(0)
    x = _unit(rng.normal(size=(1000, 8)))
    q = _unit(rng.normal(size=(1, 8)))
    parts = []
    for s in range(3):
        rows = shard_rows(len(x), s, 3)
        r, sc = FaissShard(x[rows], rows, AnnParams(kind="flat")).search(q, 10)
        parts.append((r[0], sc[0]))
    rows, scores = merge_topk(parts, 10)
    exact = np.argsort(-(x @ q[0]))[:10]
    assert rows.tolist() == exact.tolist()
    assert np.all(np.diff(scores) <= 1e-6)
    assert merge_topk([(np.array([-1, 4]), np.array([0.0, 0.5]))], 5)[0].tolist() == [4]


def test_shards_partition_the_catalog():
    from recsys.serving.pipeline.candidates.ann import shard_rows

    rows = np.concatenate([shard_rows(101, s, 4) for s in range(4)])
    assert sorted(rows.tolist()) == list(range(101))


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_ann_kinds_recall(kind):
    from recsys.serving.pipeline.candidates.ann import AnnParams, FaissShard

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(50, 16))
    x = _unit(centers[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 16)))
    q = x[:20]
    shard = FaissShard(x, np.arange(len(x)), AnnParams(kind=kind))
    assert shard.kind == kind
    got, _ = shard.search(q, 10)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)])
    assert recall > 0.8


def test_auto_kind_by_size():
    from recsys.serving.pipeline.candidates.ann import AnnParams

    p = AnnParams(flat_max_items=100, hnsw_max_items=1000)
    assert (p.choose(50), p.choose(500), p.choose(5000)) == ("flat", "hnsw", "ivfpq")


# ---------------------------------------------------------------------------- re-ranking
def test_mmr_lambda_one_is_relevance_order_and_lower_lambda_diversifies():
    from recsys.serving.pipeline.reranking.rules import RerankParams, intra_list_similarity, mmr_select

    rng = np.random.default_rng(2)
    base = _unit(rng.normal(size=(1, 8)))
    near = _unit(base + 0.05 * rng.normal(size=(10, 8)))
    far = _unit(rng.normal(size=(10, 8)))
    emb = np.vstack([near, far])
    rel = np.concatenate([np.linspace(1.0, 0.9, 10), np.linspace(0.8, 0.7, 10)])
    pure = mmr_select(rel, 5, emb, None, RerankParams(mmr_lambda=1.0, max_per_genre=99))
    assert pure == [0, 1, 2, 3, 4]
    diverse = mmr_select(rel, 5, emb, None, RerankParams(mmr_lambda=0.3, max_per_genre=99))
    assert diverse[0] == 0 and any(i >= 10 for i in diverse)
    assert intra_list_similarity(emb[diverse]) < intra_list_similarity(emb[pure])


def test_genre_cap_in_window():
    from recsys.serving.pipeline.reranking.rules import RerankParams, genre_cap_holds, mmr_select

    genres = [frozenset({"A"})] * 6 + [frozenset({"B"})] * 3 + [frozenset({"D"})]
    rel = np.linspace(1.0, 0.1, len(genres))
    order = mmr_select(rel, 8, None, genres, RerankParams(mmr_lambda=1.0, max_per_genre=2, genre_window=5))
    assert genre_cap_holds([genres[i] for i in order], 2, 5)
    assert order[:5] == [0, 1, 6, 7, 9] and len(order) == 8
    # not enough diversity left: the cap gives way rather than returning fewer items
    assert len(mmr_select(rel[:6], 6, None, genres[:6], RerankParams(max_per_genre=1))) == 6


def test_business_filter():
    from recsys.serving.pipeline.candidates.filters import FilterSpec, business_filter

    ids = np.array([1, 2, 3, 4, 5])
    genres = [frozenset({"A"}), frozenset({"B"}), frozenset({"A", "C"}), frozenset(), frozenset({"C"})]
    avail = np.array([True, True, False, True, True])
    keep = business_filter(ids, genres, avail, FilterSpec(exclude=frozenset({1}), seen=np.array([5])))
    assert ids[keep].tolist() == [2, 4]
    keep = business_filter(ids, genres, avail, FilterSpec(include_genres=frozenset({"A", "C"}), available_only=False))
    assert ids[keep].tolist() == [1, 3, 5]
    keep = business_filter(ids, genres, avail, FilterSpec(exclude_genres=frozenset({"C"})))
    assert ids[keep].tolist() == [1, 2, 4]


def test_freshness_boost_halves_at_half_life():
    from recsys.serving.pipeline.reranking.rules import SECONDS_PER_DAY, freshness_boost

    now = 1e9
    b = freshness_boost(np.array([now, now - 10 * SECONDS_PER_DAY, np.nan]), now, 0.2, 10.0)
    np.testing.assert_allclose(b, [0.2, 0.1, 0.0], atol=1e-6)


# ---------------------------------------------------------------------------- candidates / exploration
def test_merge_candidates_dedups_with_source_tags():
    from recsys.serving.pipeline.candidates.sources import merge_candidates

    c = merge_candidates([("ann", np.array([1, 2]), np.array([0.9, 0.8])),
                          ("popularity", np.array([2, 3]), np.array([1.0, 0.5]))])
    assert c.item_ids.tolist() == [1, 2, 3]
    assert c.sources == [["ann"], ["ann", "popularity"], ["popularity"]]
    assert np.isnan(c.source_scores["ann"][2]) and c.source_scores["popularity"][1] == 1.0


def test_thompson_explorer_is_seeded_and_learns():
    from recsys.serving.pipeline.exploration.thompson import ThompsonExplorer

    a = ThompsonExplorer(np.array([10, 11, 12]), rate=1.0, seed=5)
    b = ThompsonExplorer(np.array([10, 11, 12]), rate=1.0, seed=5)
    assert [a.pick(np.array([10, 11, 12])) for _ in range(5)] == [b.pick(np.array([10, 11, 12])) for _ in range(5)]
    for _ in range(50):
        a.record_impression(10)
        a.record_click(10)
        a.record_impression(11)
    picks = [a.pick(np.array([10, 11])) for _ in range(50)]
    assert picks.count(10) > 45
    assert ThompsonExplorer(np.array([1]), rate=0.0).pick(np.array([1])) is None


# ---------------------------------------------------------------------------- ranker
def test_build_ranker_inputs_follows_spec_order():
    from recsys.serving.models.artifacts import RankerSpec
    from recsys.serving.pipeline.scoring.inputs import build_ranker_inputs

    spec = RankerSpec(dense=["f_b", "retrieval_score", "f_a", "hour"],
                      sparse=[{"name": "item_id", "vocab_size": 100, "hash": False},
                              {"name": "user_id", "vocab_size": 7, "hash": True}],
                      normalization={"f_a": {"mean": 1.0, "std": 2.0}}, retrieval_score=True)
    dense, sparse = build_ranker_inputs(
        spec, user_id=3, item_ids=np.array([5, 500]), retrieval_scores=np.array([0.5, 0.25]),
        feature_names=["f_a", "f_b"], item_features=np.array([[3.0, 10.0], [5.0, 20.0]], np.float32),
        context={"hour": 13},
    )
    np.testing.assert_allclose(dense, [[10.0, 0.5, 1.0, 13.0], [20.0, 0.25, 2.0, 13.0]])
    assert sparse[:, 0].tolist() == [5, 0]  # out-of-vocabulary -> 0
    assert sparse[0, 1] == sparse[1, 1] and 0 <= sparse[0, 1] < 7


def test_ranker_score_many_equals_single_calls(serving_store):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import RankerCore

    store, _ = serving_store
    core = RankerCore(ServingConfig(model_store_uri=store.root))
    v = core.load(None)
    rng = np.random.default_rng(0)
    reqs = [(rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 1024, (n, 1)), v) for n in (3, 5, 1)]
    batched = core.score_many(reqs)
    for (d, s, _), out in zip(reqs, batched, strict=True):
        np.testing.assert_allclose(out, core.score(d, s, v), rtol=1e-5)


def test_config_validation_names_field_and_accepts_latest():
    from recsys.serving.app import ServingConfigError, parse_args

    cfg = parse_args({"retrieval_version": "latest", "experiments_config": ""})
    assert cfg.retrieval_version is None and cfg.experiments_config is None
    with pytest.raises(ServingConfigError, match="num_shards"):
        parse_args({"num_shards": 0})
    with pytest.raises(ServingConfigError, match="nonsense"):
        parse_args({"nonsense": 1})


# ---------------------------------------------------------------------------- in-process API
def _service(args: dict, **overrides):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**{**args, **overrides})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    return svc


def test_inprocess_redis_down_degrades(serving_args, closed_redis_url):
    from recsys.serving.http.api import create_api

    svc = _service(serving_args, redis_url=closed_redis_url)
    with TestClient(create_api(svc)) as c:
        r = c.post("/v1/recommendations", json={"user_id": 1, "n": 5})
        assert r.status_code == 200
        assert r.json()["degraded_reasons"] == ["feature_store_unavailable"]
        assert c.post("/v1/events", json={"user_id": 1, "item_id": 2, "event_type": "click"}).status_code == 503


def test_inprocess_experiment_routing_and_exposure_log(serving_args, tmp_path):
    from recsys.experiments.exposure_log import read_log
    from recsys.serving.http.api import create_api

    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text(
        "version: 1\nexperiments:\n  - name: diversity_test\n    variants:\n"
        "      - {name: control, weight: 50}\n"
        "      - {name: diverse, weight: 50, reranking: {mmr_lambda: 0.3}}\n"
    )
    log_dir = tmp_path / "exposures"
    svc = _service(serving_args, experiments_config=str(exp_file), exposure_log_dir=str(log_dir),
                   feature_timeout_s=5.0)  # a loaded CI box must not turn into degraded answers here
    with TestClient(create_api(svc)) as c:
        variants = set()
        for user in range(1, 21):
            body = c.post("/v1/recommendations", json={"user_id": user, "n": 5}).json()
            assert body["experiment"] == "diversity_test"
            assert body["degraded"] is False, body["degraded_reasons"]  # a degraded answer is not a served variant
            variants.add(body["variant"])
        assert variants == {"control", "diverse"}
        c.post("/v1/events", json={"user_id": 1, "item_id": 2, "event_type": "click"})
    svc.experiments.log.flush()
    frames = read_log(log_dir)
    assert len(frames.exposures) == 20 and set(frames.exposures.variant) == {"control", "diverse"}
    assert len(frames.outcomes) == 1


def test_inprocess_exploration_slot_surfaces_new_items(serving_args):
    from recsys.serving.http.api import create_api

    svc = _service(serving_args, exploration_rate=1.0, exploration_seed=7, exploration_slot=2)
    assert len(svc.explorer.new_item_ids) > 0
    with TestClient(create_api(svc)) as c:
        body = c.post("/v1/recommendations", json={"user_id": 2, "n": 6}).json()
        assert len(body["items"]) == 6
        assert body["items"][2]["sources"] == ["exploration"]
        assert svc.explorer.is_new(body["items"][2]["item_id"])
        off = c.post("/v1/recommendations", json={"user_id": 2, "n": 6, "diversity": {"exploration": False}}).json()
        assert all("exploration" not in it["sources"] for it in off["items"])


def test_inprocess_exploration_slot_obeys_the_requests_business_filter(serving_args):
    """The slot's new items pass the request's filter at the candidate stage (step 5), the only place it runs."""
    from recsys.serving.http.api import create_api

    svc = _service(serving_args, exploration_rate=1.0, exploration_seed=7, exploration_slot=2, cache={"enabled": False})
    new = [int(i) for i in svc.explorer.new_item_ids]
    assert len(new) >= 2
    with TestClient(create_api(svc)) as c:
        for user in range(1, 6):  # every new item but the last excluded: the slot can only show the last one
            body = c.post("/v1/recommendations", json={"user_id": user, "n": 6, "exclude": new[:-1]}).json()
            shown = [it["item_id"] for it in body["items"] if "exploration" in it["sources"]]
            assert shown == [new[-1]], body["items"]
        body = c.post("/v1/recommendations", json={"user_id": 1, "n": 6, "exclude": new}).json()
        assert all("exploration" not in it["sources"] for it in body["items"])  # nothing allowed: no slot


def test_serve_config_example_is_valid():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    import recsys.serving
    from recsys.serving.app import parse_args

    doc = yaml.safe_load((Path(recsys.serving.__file__).parent / "serve_config.yaml").read_text())
    ServeDeploySchema.model_validate(doc)
    app = doc["applications"][0]
    assert app["import_path"] == "recsys.serving.app:build_app"
    cfg = parse_args(app["args"])
    names = {d["name"] for d in app["deployments"]}
    assert names <= {"Ingress", "Ranker"} | {f"RetrievalShard{i}" for i in range(cfg.num_shards)}


class _BrokenShard:
    async def search(self, *args):
        raise ConnectionError("replica died")

    async def load(self, version):
        return version

    async def retain(self, versions):
        return versions


def test_inprocess_failed_shard_degrades_and_bad_reload_keeps_serving(serving_args):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**serving_args)
    svc = RecommendationService(cfg, [RetrievalShard(cfg, 0, 2), _BrokenShard()], Ranker(cfg))
    asyncio.run(svc.start())
    with TestClient(create_api(svc)) as c:
        body = c.post("/v1/recommendations", json={"user_id": 4, "n": 8}).json()
        assert len(body["items"]) == 8 and "retrieval_shard_unavailable" in body["degraded_reasons"]
        r = c.post("/admin/reload", json={"retrieval_version": "no-such-version"})
        assert r.status_code == 409 and "still serving" in r.json()["detail"]
        assert c.post("/v1/recommendations", json={"user_id": 4, "n": 3}).json()["model_versions"]["retrieval"] == "v1"


def test_redis_url_falls_back_to_the_environment(monkeypatch):
    """With an external Redis the chart keeps the URL in a Secret (env var), not in the Serve config."""
    from recsys.serving.app import parse_args

    monkeypatch.delenv("RECSYS_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://redis.example:6379/2")
    assert parse_args({}).redis_url == "redis://redis.example:6379/2"
    assert parse_args({"redis_url": "redis://127.0.0.1:6379/0"}).redis_url == "redis://127.0.0.1:6379/0"


def test_inprocess_logs_go_through_the_stream_into_daily_parquet(serving_args, tmp_path, redis_url):
    """log_archive set: no JSON-lines file is written; exposures, outcomes and events reach the parquet
    dataset through the Redis stream and the replica's archiver (issue 22), and read_log reads them."""
    import uuid

    import redis as redis_client

    from recsys.experiments.exposure_log import read_log
    from recsys.platform import log_dataset
    from recsys.serving.http.api import create_api

    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text("version: 1\nexperiments:\n  - name: t\n    variants:\n"
                        "      - {name: control, weight: 50}\n      - {name: other, weight: 50}\n")
    uri = f"file://{tmp_path}/dataset"
    stream = f"test:logs:{uuid.uuid4().hex[:8]}"
    svc = _service(serving_args, experiments_config=str(exp_file), exposure_log_dir=str(tmp_path / "unused"),
                   feature_timeout_s=5.0, log_archive={"uri": uri, "stream": stream, "retention_days": 30})
    try:
        with TestClient(create_api(svc)) as c:
            for user in range(1, 11):
                assert c.post("/v1/recommendations", json={"user_id": user, "n": 5}).status_code == 200
            assert c.post("/v1/events", json={"user_id": 1, "item_id": 2, "event_type": "click"}).status_code == 202
            deadline = time.time() + 20
            while time.time() < deadline:
                frames = read_log(uri) if log_dataset.is_dataset(uri, ("exposures",)) else None
                if frames is not None and len(frames.exposures) == 10 and len(frames.outcomes) == 1:
                    break
                time.sleep(0.2)
        assert frames is not None and len(frames.exposures) == 10, frames
        assert set(frames.exposures.variant) <= {"control", "other"} and len(frames.outcomes) == 1
        assert not (tmp_path / "unused").exists(), "no local JSON-lines log when log_archive is set"
    finally:
        svc.experiments.archiver.stop()
        redis_client.Redis.from_url(redis_url).delete(stream)
