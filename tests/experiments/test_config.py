"""Config validation: good files load, bad ones fail with the file and the field path in the message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recsys.experiments.config import ConfigError, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "experiments" / "examples"


@pytest.mark.parametrize("name", ["recommendations.yaml", "minimal.yaml"])
def test_examples_are_valid(name):
    config = load_config(EXAMPLES / name)
    assert config.experiments


def test_example_defaults_are_filled():
    config = load_config(EXAMPLES / "recommendations.yaml")
    assert config.layer_names() == ["models", "reranking"]
    ranker = config.experiment("ranker_v2")
    assert ranker.control_variant == "control"
    assert ranker.lanes() == [50.0, 50.0]
    assert ranker.start is not None and ranker.start.tzinfo is not None
    assert config.layer_shares("models") == [60.0, 40.0]
    reranking = config.experiment("diversity").variant("lambda_03").reranking
    assert reranking.overrides() == {"mmr_lambda": 0.3, "max_per_genre": 3}


def _error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="bad.yaml")
    return str(info.value)


def _two(**variant_overrides):
    return {"name": "exp", "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, **variant_overrides}]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"experiments": [_two(weight=150)]}, "experiments[exp].variants[b].weight"),
        ({"experiments": [_two(wieght=5)]}, "experiments[exp].variants[b].wieght"),
        ({"experiments": [_two(reranking={"mmr_lambda": 2})]}, "experiments[exp].variants[b].reranking.mmr_lambda"),
        ({"experiments": [_two(reranking={"max_per_genre": 0})]}, "variants[b].reranking.max_per_genre"),
        # names serving does not read, and ill-typed values, fail validation instead of a request
        ({"experiments": [_two(reranking={"diversity_lambda": 0.3})]}, "reranking.diversity_lambda: Extra inputs"),
        ({"experiments": [_two(reranking={"mmr_lambda": "high"})]}, "reranking.mmr_lambda: Input should be a valid"),
        ({"experiments": [_two(reranking={"mmr_lambda": "0.3"})]}, "reranking.mmr_lambda"),
        ({"experiments": [_two(reranking={"max_per_genre": True})]}, "reranking.max_per_genre"),
        ({"experiments": [_two(reranking={"max_per_genre": 2.5})]}, "reranking.max_per_genre"),
        ({"experiments": [{"name": "exp", "variants": [{"name": "a", "weight": 1}]}]}, "experiments[exp].variants"),
        ({"experiments": [{**_two(), "start": "not a date"}]}, "experiments[exp].start"),
        ({"experiments": [{**_two(), "targeting": {"segment": "old"}}]}, "experiments[exp].targeting.segment"),
        ({"holdout": {"percent": 100}}, "holdout.percent"),
        ({"experiments": [_two(weight=60)]}, "experiments[exp].variants[b].weight: 60% exceeds its lane of 50%"),
        ({"experiments": [{**_two(), "control": "c"}]}, "experiments[exp].control"),
        (
            {"experiments": [{**_two(), "start": "2025-02-01T00:00:00Z", "stop": "2025-01-01T00:00:00Z"}]},
            "experiments[exp].stop: must be after start",
        ),
        ({"experiments": [_two(), _two()]}, "duplicate experiment name 'exp'"),
        (
            {"experiments": [{**_two(), "name": "x", "layer_share": 70}, {**_two(), "name": "y", "layer_share": 40}]},
            "layers[default]: experiments' layer_share sum to 110%",
        ),
        ({"layers": [{"name": "l1"}], "experiments": [{**_two(), "layer": "l2"}]}, "experiments[exp].layer: unknown"),
        (
            {"experiments": [{**_two(), "analysis": {"method": "group_sequential"}}]},
            "experiments[exp].analysis.max_units_per_variant",
        ),
        ({"experiments": [{**_two(), "analysis": {"primary_metric": "revenue"}}]}, "analysis.primary_metric"),
        ([1, 2], "top level must be a mapping"),
    ],
)
def test_errors_name_the_field(raw, expected):
    message = _error(raw)
    assert message.startswith("bad.yaml")
    assert expected in message


def test_weights_over_100_with_explicit_lanes():
    raw = {
        "experiments": [
            {
                "name": "e",
                "variants": [
                    {"name": "a", "weight": 60, "lane": 60},
                    {"name": "b", "weight": 50, "lane": 50},
                ],
            }
        ]
    }
    message = _error(raw)
    assert "weights sum to 110%" in message and "lanes sum to 110%" in message


def test_load_config_names_the_file_for_yaml_and_io_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML \(line"):
        load_config(broken)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiments": [_two(weight=-1)]}))
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*experiments\[exp\]\.variants\[b\]\.weight"):
        load_config(bad)
