"""LinUCB exploration: atomic Redis state, one reward per impression, honest propensities, it learns."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from recsys.serving.pipeline.exploration.linucb import LinUCB, LinUCBConfig, features, user_profile


@pytest.fixture
def model_factory(redis_url):
    made: list[LinUCB] = []

    def make(**kw) -> LinUCB:
        key = kw.pop("key", f"test:linucb:{uuid.uuid4().hex}")
        m = LinUCB(redis_url, LinUCBConfig(key=key, **kw), seed=len(made))
        made.append(m)
        return m

    yield make
    for m in made:
        m.reset()
        for k in m._r.scan_iter(f"{m.cfg.key}:pending:*"):
            m._r.delete(k)


def test_features_shape_and_profile():
    vecs = np.eye(4)[[0, 1]] * 2.0
    p = user_profile(vecs, np.array([True, False]), dims=3)
    assert np.allclose(p, [1, 0, 0])
    x = features(p, np.array([[3.0, 0, 0, 0], [0, 0, 1.0, 0]]), dims=3)
    assert x.shape == (2, 7)
    assert np.allclose(x[0], [1, 1, 0, 0, 1, 0, 0]) and np.allclose(x[1], [1, 0, 0, 1, 0, 0, 0])
    assert not user_profile(np.zeros((0, 4)), np.zeros(0, bool), 3).any()


def test_concurrent_updates_from_many_clients_are_never_lost(model_factory):
    first = model_factory(content_dims=2, refresh_s=0)
    clients = [first] + [model_factory(content_dims=2, key=first.cfg.key) for _ in range(3)]
    x = np.array([1.0, 0.5, -0.25, 0.1, 0.2])

    errors: list[str] = []  # a thread's exception is only a warning: collected here, asserted below

    def work(m: LinUCB, w: int) -> None:
        try:
            for i in range(40):
                m.record_impression(w, i, x)
                m.record_reward(w, i, 1.0)
        except Exception as e:  # noqa: BLE001 - reported to the main thread
            errors.append(f"client {w}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(m, w)) for w, m in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    first.refresh(force=True)
    assert first.impressions == 160
    raw = first._r.hgetall(first.state_key)
    assert float(raw[b"A:0:0"]) == pytest.approx(160.0)
    assert float(raw[b"A:1:2"]) == pytest.approx(160 * 0.5 * -0.25)
    assert float(raw[b"b:3"]) == pytest.approx(160 * 0.1)
    assert float(raw[b"clicks"]) == pytest.approx(160.0)


def test_reward_counts_once_and_only_for_shown_items(model_factory):
    m = model_factory(content_dims=1)
    m.record_impression(1, 10, np.array([1.0, 1.0, 0.0]))
    assert m.record_reward(1, 10) is True
    assert m.record_reward(1, 10) is False  # double click
    assert m.record_reward(1, 11) is False  # never shown by the slot
    assert m.record_reward(2, 10) is False  # other user
    m.refresh(force=True)
    assert m._theta[0] > 0


def test_logged_propensity_is_the_real_pick_frequency(model_factory):
    m = model_factory(content_dims=2, temperature=0.5)
    rng = np.random.default_rng(0)
    x = features(np.array([1.0, 0.0]), rng.normal(size=(5, 2)), 2)
    for _ in range(20):
        m.record_impression(0, 99, x[0])
    m.record_reward(0, 99)
    m.refresh(force=True)
    ids = np.arange(5) + 100
    p = m.probabilities(x)
    counts = np.zeros(5)
    for _ in range(4000):
        item, prob = m.pick(ids, x)
        counts[item - 100] += 1
        assert prob == pytest.approx(p[item - 100])
    freq = counts / counts.sum()
    assert np.abs(freq - p).max() < 4 * np.sqrt(p * (1 - p) / 4000).max() + 1e-3
    assert m.pick(np.zeros(0, np.int64), x[:0]) is None


def test_linucb_learns_which_content_gets_clicked(model_factory):
    """Items along content direction 0 get clicked 40% of the time, others 4%; LinUCB finds them."""
    m = model_factory(content_dims=3, refresh_s=0, alpha=0.5, temperature=0.02)
    rng = np.random.default_rng(1)
    n_items = 30
    vecs = rng.normal(size=(n_items, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    good = vecs[:, 0] > 0.5
    ctr = np.where(good, 0.4, 0.04)
    ids = np.arange(n_items)
    profile = np.zeros(3)
    x = features(profile, vecs, 3)
    clicks = []
    for t in range(400):
        m.refresh()
        item, _ = m.pick(ids, x)
        m.record_impression(t, item, x[item])
        if rng.random() < ctr[item]:
            m.record_reward(t, item)
            clicks.append(1)
        else:
            clicks.append(0)
    m.refresh(force=True)
    late_ctr = float(np.mean(clicks[200:]))
    uniform_ctr = float(ctr.mean())
    assert late_ctr > uniform_ctr + 0.1, (late_ctr, uniform_ctr)
    p = m.probabilities(x)
    assert p[good].sum() > 0.8


def test_thompson_propensity_matches_pick_frequency_and_variant_params_are_capped():
    from recsys.serving.pipeline.exploration.thompson import (
        ThompsonExplorer,
        exploration_policy,
        exploration_rate,
        slate_propensities,
    )

    ex = ThompsonExplorer(np.array([1, 2, 3]), rate=1.0, seed=0)
    for _ in range(30):
        ex.record_impression(1)
    for _ in range(10):
        ex.record_click(1)
        ex.record_impression(2)
    counts, props = {1: 0, 2: 0, 3: 0}, {1: [], 2: [], 3: []}
    for _ in range(1500):
        item, p = ex.pick_with_propensity(np.array([1, 2, 3]), mc_draws=200)
        counts[item] += 1
        props[item].append(p)
    for item in (1, 2, 3):
        if counts[item] > 50:
            assert np.mean(props[item]) == pytest.approx(counts[item] / 1500, abs=0.05)
    assert ex.pick_with_propensity(np.zeros(0, np.int64)) is None
    ex.add_new_items(np.array([9]))
    assert ex.is_new(9)
    assert exploration_policy({"exploration": "LinUCB"}) == "linucb"
    assert exploration_policy({"exploration": "bogus"}) == "thompson"
    assert exploration_policy({}) == "thompson"
    assert exploration_rate({"exploration_rate": 0.9}, 0.1, 0.2) == 0.2
    assert exploration_rate({"exploration_rate": "x"}, 0.1, 0.2) == 0.1
    assert exploration_rate({}, 0.1, 0.2) == 0.1
    assert exploration_rate({}, 0.5, 0.2) == 0.5  # the operator's setting is not capped, a variant's is
    assert slate_propensities(3, 0.1, True).tolist() == [1.0, 1.0, 0.9]
    assert slate_propensities(3, 0.1, False).tolist() == [1.0, 1.0, 1.0]


def test_linucb_variant_in_the_service_logs_propensities_and_learns_from_clicks(serving_args, tmp_path, redis_url):
    """A variant with `exploration: linucb` gets the LinUCB slot; exposures carry propensities; a click rewards."""
    import asyncio

    from starlette.testclient import TestClient

    from recsys.experiments.exposure_log import read_log
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    exp_file = tmp_path / "experiments.yaml"
    exp_file.write_text(
        "version: 1\nexperiments:\n  - name: explore\n    variants:\n"
        "      - {name: control, weight: 50}\n"
        "      - {name: bandit, weight: 50, reranking: {exploration: linucb, exploration_rate: 0.9}}\n"
    )
    key = f"test:linucb:{uuid.uuid4().hex}"
    cfg = ServingConfig(**{**serving_args, "experiments_config": str(exp_file), "exposure_log_dir": str(tmp_path / "x"),
                           "exploration_rate": 1.0, "exploration_max_rate": 0.5, "exploration_slot": 1,
                           "linucb": {"key": key, "refresh_s": 0}, "catalog_poll_s": 0})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)],
                                Ranker(cfg))
    asyncio.run(svc.start())
    shown: dict[int, int] = {}
    try:
        with TestClient(create_api(svc)) as c:
            for user in range(1, 41):
                body = c.post("/v1/recommendations", json={"user_id": user, "n": 5}).json()
                slot = [it for it in body["items"] if "exploration" in it["sources"]]
                if body["variant"] == "bandit" and slot:
                    assert slot[0]["sources"] == ["exploration", "linucb"] and slot[0]["rank"] == 1
                    shown[user] = slot[0]["item_id"]
                elif slot:
                    assert slot[0]["sources"] == ["exploration"]  # control: Thompson at the operator's rate
            assert shown, "no LinUCB slot in 40 requests"
            user, item = next(iter(shown.items()))
            c.post("/v1/events", json={"user_id": user, "item_id": item, "event_type": "click"})
        svc.experiments.log.flush()
        ex = read_log(tmp_path / "x").exposures
        assert len(ex) == 40
        for _, row in ex.iterrows():
            props = row["propensities"]
            assert isinstance(props, list) and len(props) == len(row["items"])
            assert all(0 < p <= 1 for p in props)
            if row["variant"] == "bandit" and int(row["unit_id"]) in shown:
                # the slot item: the variant's capped rate (0.5) times its pick probability; the ranked
                # items left are always shown (the one the slot could displace was displaced)
                assert props[1] <= 0.5 + 1e-9
                assert [p for i, p in enumerate(props) if i != 1] == [1.0] * (len(props) - 1)
            elif row["variant"] == "bandit":
                assert props[:-1] == [1.0] * (len(props) - 1) and props[-1] == pytest.approx(0.5)
        # the serving log is what off-policy evaluation reads: every request is a decision with propensities
        import json

        import pandas as pd
        from click.testing import CliRunner

        from recsys.experiments.cli import cli as experiments_cli

        shown_items = sorted({int(i) for items in ex["items"] for i in items})
        pd.DataFrame({"item_id": shown_items, "probability": 0.1}).to_csv(tmp_path / "target.csv", index=False)
        res = CliRunner().invoke(experiments_cli, ["ope", "--log", str(tmp_path / "x"), "--policy",
                                                   str(tmp_path / "target.csv"), "--variant", "bandit", "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert out["requests"] == int((ex["variant"] == "bandit").sum()) and out["skipped_without_propensities"] == 0
        assert svc.exploration.rewards.join(10), "the click's reward never left the queue"
        model = svc.exploration.linucb
        model.refresh(force=True)
        assert model.impressions == len(shown)
        assert float(model._r.hget(model.state_key, "clicks")) == pytest.approx(1.0)
    finally:
        svc.exploration.linucb.reset()
