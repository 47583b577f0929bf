"""CLI: validate/list/status/report on a synthetic log written through the real router and log."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recsys.experiments.cli import cli
from recsys.experiments.config import parse_config
from recsys.experiments.simulation import write_synthetic_log

EXAMPLES = Path(__file__).resolve().parents[2] / "experiments" / "examples"

CONFIG = {
    "holdout": {"percent": 5},
    "experiments": [
        {
            "name": "ranker_v2",
            "layer": "models",
            "start": "2025-01-01T00:00:00Z",
            "variants": [
                {"name": "control", "weight": 50},
                {"name": "treatment", "weight": 50, "ranking_version": "ranker-v2"},
            ],
            "analysis": {"primary_metric": "ctr", "tau": 0.03, "max_units_per_variant": 4000, "looks": 12},
        },
        {
            "name": "diversity",
            "layer": "reranking",
            "start": "2025-01-01T00:00:00Z",
            "variants": [
                {"name": "base", "weight": 50},
                {"name": "diverse", "weight": 50, "reranking": {"mmr_lambda": 0.5}},
            ],
            "analysis": {"primary_metric": "conversion", "looks": 5},
        },
    ],
}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config_path = root / "experiments.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    log_dir = root / "log"
    written = write_synthetic_log(
        parse_config(CONFIG),
        log_dir,
        units=3000,
        click_rate={"control": 0.08, "treatment": 0.16},
        seed=5,
    )
    assert written > 3000
    return config_path, log_dir


def test_validate_ok_and_bad(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", str(EXAMPLES / "recommendations.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "OK:" in ok.output and "3 experiment(s) in 2 layer(s)" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiments": [{"name": "e", "variants": [{"name": "a", "weight": 500}]}]}))
    result = runner.invoke(cli, ["validate", str(bad)])
    assert result.exit_code != 0
    assert "bad.yaml" in result.output and "experiments[e].variants[a].weight" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code != 0 and "cannot read" in missing.output


def test_list_shows_layers_variants_and_versions():
    result = CliRunner().invoke(cli, ["list", str(EXAMPLES / "recommendations.yaml")])
    assert result.exit_code == 0, result.output
    assert "layer models" in result.output and "ranking=ranker-v2" in result.output
    assert "weight 10% of lane 50%" in result.output


def test_status_counts_exposures_and_checks_srm(logged):
    config_path, log_dir = logged
    result = CliRunner().invoke(cli, ["status", str(config_path), "--log", str(log_dir)])
    assert result.exit_code == 0, result.output
    assert "ranker_v2:" in result.output and "treatment:" in result.output
    assert "SRM:" in result.output and "-> ok" in result.output
    assert "holdout:" in result.output
    missing = CliRunner().invoke(cli, ["status", str(config_path), "--log", str(log_dir / "nope")])
    assert missing.exit_code != 0 and "does not exist" in missing.output


def test_report_prints_decision_and_writes_png_and_html(logged, tmp_path):
    config_path, log_dir = logged
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", str(config_path), "--log", str(log_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "DECISION ranker_v2: stop: treatment wins" in result.output
    assert "DECISION diversity:" in result.output
    assert "msprt" in result.output and "group_sequential" in result.output
    png = out / "ranker_v2.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert (out / "diversity.png").exists()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "<table>" in page and "stop: treatment wins" in page
    unknown = CliRunner().invoke(
        cli, ["report", str(config_path), "--log", str(log_dir), "--experiment", "nope"]
    )
    assert unknown.exit_code != 0 and "unknown experiment" in unknown.output


def test_validate_rejects_a_reranking_parameter_serving_does_not_read(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "experiments:\n  - name: div\n    variants:\n      - {name: a, weight: 50}\n"
        "      - {name: b, weight: 50, reranking: {diversity_lambda: 0.3, max_per_genre: two}}\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "experiments[div].variants[b].reranking.diversity_lambda" in result.output
    assert "experiments[div].variants[b].reranking.max_per_genre" in result.output
