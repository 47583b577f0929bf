"""Stable assignment (issue 23): adding or removing an experiment never moves a running one's units,
and `validate` rejects reused salts and two layers that set the same field."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from recsys.experiments.cli import cli
from recsys.experiments.router import ExperimentRouter

UNITS = [f"user-{i}" for i in range(20_000)]


def _exp(name, share=None, layer="models", **variant_fields):
    e = {
        "name": name,
        "layer": layer,
        "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50, **variant_fields}],
    }
    if share is not None:
        e["layer_share"] = share
    return e


def _router(path, experiments):
    path.write_text(yaml.safe_dump({"experiments": experiments}))
    return ExperimentRouter.from_file(path)


def _in(router, name):
    return {u: a.variant for u in UNITS for a in router.assign(u) if a.experiment == name}


def test_adding_an_experiment_leaves_every_running_unit_where_it_was(tmp_path):
    path = tmp_path / "experiments.yaml"
    router = _router(path, [_exp("a", 30), _exp("b", 30)])
    before_a, before_b = _in(router, "a"), _in(router, "b")
    assert len(before_a) > 5_000 and len(before_b) > 5_000
    # a new experiment declared first: the old layout gave it [0, 20%) and shifted a and b up by 20%
    router = _router(path, [_exp("new", 20), _exp("a", 30), _exp("b", 30)])
    assert _in(router, "a") == before_a and _in(router, "b") == before_b
    assert len(_in(router, "new")) > 3_000 and not set(_in(router, "new")) & (set(before_a) | set(before_b))


def test_an_experiment_that_does_not_fit_is_rejected_not_squeezed_in(tmp_path):
    path = tmp_path / "experiments.yaml"
    router = _router(path, [_exp("ranker_v2")])  # implicit share: the whole layer
    before = _in(router, "ranker_v2")
    assert len(before) > 19_000
    # an implicit-share newcomer: the old layout halved ranker_v2 (9,935 of its units dropped out)
    path.write_text(yaml.safe_dump({"experiments": [_exp("ranker_v2"), _exp("retrieval_ann")]}))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1 and "experiments[retrieval_ann]: no free buckets left in layer 'models'" in (
        result.output
    )
    assert router.maybe_reload() is False  # a running router keeps the old config
    assert _in(router, "ranker_v2") == before


def test_removing_an_experiment_leaves_the_others_where_they_were(tmp_path):
    path = tmp_path / "experiments.yaml"
    router = _router(path, [_exp("a", 30), _exp("b", 30), _exp("c")])
    before_b, before_c = _in(router, "b"), _in(router, "c")
    router = _router(path, [_exp("b", 30), _exp("c"), _exp("d", 20)])
    assert _in(router, "b") == before_b and _in(router, "c") == before_c
    # d was placed in a's old range, which nobody else uses
    assert not set(_in(router, "d")) & (set(before_b) | set(before_c))


def test_slots_are_persisted_next_to_the_config_and_a_share_grows_in_place(tmp_path):
    path = tmp_path / "experiments.yaml"
    before = _in(_router(path, [_exp("a", 30), _exp("b", 30)]), "a")
    ledger = json.loads((tmp_path / "experiments.slots.json").read_text())
    assert ledger["layers"]["models"] == {"a": [0, 3000], "b": [3000, 6000]}
    # b can grow into the free buckets after it; a cannot grow into b: validate says so, a stays
    grown = _in(_router(path, [_exp("a", 30), _exp("b", 40)]), "a")
    assert grown == before
    path.write_text(yaml.safe_dump({"experiments": [_exp("a", 40), _exp("b", 40)]}))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1 and "experiments[a].layer_share: cannot grow to 40% in place" in result.output


def _validate(tmp_path, config):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return CliRunner().invoke(cli, ["validate", str(path)])


def test_validate_rejects_a_reused_salt(tmp_path):
    experiments = [{**_exp("a"), "salt": "shared"}, {**_exp("b", layer="reranking"), "salt": "shared"}]
    result = _validate(tmp_path, {"experiments": experiments})
    assert result.exit_code == 1
    assert "experiments[b].salt: salt 'shared' is also used by experiments[a]" in result.output
    layer_salt = {"layers": [{"name": "models", "salt": "s1"}], "experiments": [{**_exp("a"), "salt": "s1"}]}
    result = _validate(tmp_path, layer_salt)
    assert result.exit_code == 1 and "salt 's1' is also used by layers[models]" in result.output
    holdout = {"holdout": {"percent": 5, "salt": "h"}, "experiments": [{**_exp("a"), "salt": "h"}]}
    result = _validate(tmp_path, holdout)
    assert result.exit_code == 1 and "also used by holdout" in result.output


def test_validate_rejects_two_layers_setting_the_same_field(tmp_path):
    config = {"experiments": [_exp("a", ranking_version="v2"), _exp("b", layer="other", ranking_version="v3")]}
    result = _validate(tmp_path, config)
    assert result.exit_code == 1
    assert "layers[other]: sets ranking_version (experiment b), which layer models also sets (experiment a)" in (
        result.output
    )
    rerank = {"experiments": [_exp("a", reranking={"mmr_lambda": 0.2}),
                              _exp("b", layer="x", reranking={"mmr_lambda": 0.3})]}
    assert "sets reranking.mmr_lambda" in _validate(tmp_path, rerank).output
