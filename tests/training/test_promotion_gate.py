"""Promotion gate: a ranker that does not beat retrieval order on the gate window is not promoted.

A real model store with a real (if simple) two-tower version (tests/training/stub_models.py: ALS
item factors + a history-averaging TorchScript user tower) - no Ray job, so the file stays fast;
the Ray-trained ranker's gate is covered in test_jobs.py.  The rankers under test are hand-built
TorchScript files so their quality is known: one reverses retrieval order (crippled), one copies
it (no better than retrieval, so also refused: a zero difference's CI is not above zero).  The pass path:
over a two-tower that learned nothing (its embeddings shuffled over the items), a ranker ordering the
merged candidates by item popularity clearly beats retrieval order, so the gate passes and promotes it,
both for a hand-built ranker and for one that ``train_ranking(promote=True)`` trains.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from recsys.training.ranking.model import MlpRanker
from recsys.training.workflows import Inputs, gate_window_check, promote_if_gate_passes

from .conftest import small_config
from .stub_models import write_stub_two_tower


@pytest.fixture(scope="module")
def gate_setup(small_dataset, small_split, tmp_path_factory):
    from recsys.platform.model_store import ModelStore

    tmp = tmp_path_factory.mktemp("gate")
    cfg = small_config(tmp)
    split, cat = small_split
    inputs = Inputs(dataset=small_dataset, split=split, catalog=cat)
    store = ModelStore(tmp / "models")
    return cfg, inputs, store, write_stub_two_tower(store, split, cat), tmp


def write_fixed_ranker(store, tt, version: str, sign: float, feature: str = "two_tower_score",
                       candidate_sources: dict[str, int] | None = None):
    """A ranker scoring sign * ``feature`` (sign -1 on two_tower_score: the exact reverse of retrieval order)."""
    model = MlpRanker(1, [], hidden=(4,))  # the MLP's last layer starts at zero: the score is the linear part
    with torch.no_grad():
        model.linear.weight.fill_(sign)
        model.linear.bias.zero_()
    spec = {"dense": [feature], "sparse": [], "normalization": {}, "retrieval_score": False,
            "candidate_sources": candidate_sources or {"two_tower": 200, "item_knn": 0, "popularity": 0}}
    with store.write_version("ranker", version, kind="ranking", params={"retrieval_version": tt.version}) as d:
        torch.jit.save(torch.jit.script(model.eval()), str(d / "ranker.pt"))
        (d / "feature_spec.json").write_text(json.dumps(spec))
    return store.get("ranker", version)


def test_crippled_ranker_is_refused_and_previous_version_stays(gate_setup):
    cfg, inputs, store, tt, _ = gate_setup
    good = write_fixed_ranker(store, tt, "copy", +1.0)
    store.promote("ranker", good.version)
    bad = write_fixed_ranker(store, tt, "crippled", -1.0)
    gate = gate_window_check(cfg, inputs, store, bad, progress=False)
    assert not gate.passed
    assert gate.metrics["recall@20"].diff < 0 and gate.metrics["recall@20"].hi < 0  # it clearly loses
    assert not promote_if_gate_passes(store, bad, gate, progress=False)
    assert store.promoted("ranker") == "copy"
    stored = store.get("ranker", "crippled").metrics["gate"]
    assert stored["passed"] is False and stored["metrics"]["recall@20"]["diff"] < 0
    assert stored["window"] == "time2" and stored["n_users"] > 0
    assert 0 < stored["candidate_recall"]["two_tower_recall@200"] <= 1
    # files are untouched by the metrics annotation: the version the gate wrote into still verifies
    store.verify(store.get("ranker", "crippled"))
    assert store.get("ranker", "crippled", verify=True).version == "crippled"


def test_ranker_equal_to_retrieval_order_is_refused(gate_setup):
    cfg, inputs, store, tt, _ = gate_setup
    same = write_fixed_ranker(store, tt, "same", +1.0)
    gate = gate_window_check(cfg, inputs, store, same, progress=False)
    for m in cfg.ranking.gate_metrics:
        assert gate.metrics[m].diff == pytest.approx(0.0, abs=1e-12)
    assert not gate.passed and "does not exclude zero" in gate.reason


def test_models_show_prints_the_gate_metrics(gate_setup):
    from recsys.platform.cli import root

    _, _, store, _, tmp = gate_setup
    env = {"RECSYS_MODEL_STORE_URI": str(store.root), "RECSYS_DATA_DIR": str(tmp / "nodata")}
    r = CliRunner().invoke(root, ["models", "show", "ranker", "crippled"], env=env)
    assert r.exit_code == 0, r.output
    assert "gate: REFUSED on time2" in r.output and "recall@20: pipeline" in r.output
    r = CliRunner().invoke(root, ["models", "list", "ranker"], env=env)
    assert "crippled" in r.output and "gate=refused" in r.output


def test_candidate_recall_is_the_rankers_ceiling(gate_setup):
    from recsys.training.workflows import candidate_recall

    cfg, inputs, store, _, _ = gate_setup
    ceiling = candidate_recall(cfg, inputs, store, store.get("ranker", "copy"))
    assert 0 < ceiling["two_tower_recall@200"] <= ceiling["merged_candidates_recall"] <= 1


@pytest.fixture(scope="module")
def beatable_setup(small_dataset, small_split, tmp_path_factory):
    """A store of its own whose two-tower learned nothing (shuffled embeddings): retrieval order is beatable."""
    from recsys.platform.model_store import ModelStore

    tmp = tmp_path_factory.mktemp("gate_pass")
    cfg = small_config(tmp)
    split, cat = small_split
    store = ModelStore(tmp / "models")
    tt = write_stub_two_tower(store, split, cat, scramble_seed=0)
    return cfg, Inputs(dataset=small_dataset, split=split, catalog=cat), store, tt


POPULARITY_SOURCES = {"two_tower": 200, "item_knn": 0, "popularity": 200}


def test_ranker_that_clearly_beats_retrieval_order_passes_and_is_promoted(beatable_setup):
    cfg, inputs, store, tt = beatable_setup
    store.promote("ranker", write_fixed_ranker(store, tt, "copy", +1.0).version)
    popular = write_fixed_ranker(store, tt, "popular", +1.0, "item_views_30d", POPULARITY_SOURCES)
    gate = gate_window_check(cfg, inputs, store, popular, progress=False)
    assert gate.passed, gate.summary()
    for m in cfg.ranking.gate_metrics:  # the CI, not only the point estimate, is above zero on every metric
        assert gate.metrics[m].lo > 0 and gate.metrics[m].pipeline > gate.metrics[m].retrieval, (m, gate.metrics[m])
    assert promote_if_gate_passes(store, popular, gate, progress=False)
    assert store.promoted("ranker") == "popular"
    stored = store.get("ranker", "popular", verify=True).metrics["gate"]
    assert stored["passed"] is True
    # a ranker is already promoted ("copy"), so the gate also compared against the pipeline serving now
    assert stored["reason"] == ("pipeline beats retrieval order on every gate metric "
                                "and is not worse than ranker/copy (serving now)")


def test_train_ranking_promotes_a_ranker_that_passes_the_gate(beatable_setup):
    """The workflow's own path: train (in-process), gate, promote; the gate result is stored with the version."""
    from recsys.training.workflows import train_ranking

    cfg, inputs, store, tt = beatable_setup
    store.promote("ranker", write_fixed_ranker(store, tt, "before", +1.0).version)
    cfg = cfg.model_copy(update={"ranking": cfg.ranking.model_copy(update={"popularity_candidates": 200})})
    mv = train_ranking(cfg, inputs, store, "trained", promote=True, retrieval_version=tt.version, progress=False,
                       use_ray=False)
    gate = mv.metrics["gate"]
    assert gate["passed"] is True, gate
    assert all(gate["metrics"][m]["lo"] > 0 for m in cfg.ranking.gate_metrics), gate["metrics"]
    assert store.promoted("ranker") == "trained"
