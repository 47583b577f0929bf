"""The frozen plan (issue 23): written once, read by every later report, changed only by --replan.

The bias it removes: τ came from the log's pre-period at every report run, so deleting old log files
(retention) changed τ in the middle of the experiment (to a τ taken from the first look's own data).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from recsys.experiments.cli import cli
from recsys.experiments.exposure_log import ExposureLog

DAY = 86_400.0
START = 1_736_467_200.0  # 2025-01-10T00:00:00Z
CONFIG = {
    "experiments": [
        {
            "name": "ranker",
            "start": "2025-01-10T00:00:00Z",
            "variants": [{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}],
            "analysis": {"primary_metric": "ctr", "max_units_per_variant": 1000, "looks": 5, "mde": 0.1},
        }
    ]
}


@pytest.fixture
def logged(tmp_path):
    rng = np.random.default_rng(7)
    with ExposureLog(tmp_path / "log", fsync="never") as log:
        for u in range(600):  # pre-period: days 2025-01-03 .. 2025-01-08
            ts = START - 7 * DAY + rng.random() * 5 * DAY
            log.log_exposure(f"p{u}", "older", "control", f"p{u}", ts, [1])
            if rng.random() < 0.12:
                log.log_outcome(f"p{u}", "click", 1.0, ts + 1, 1)
        for u in range(1200):
            arm = ("control", "treatment")[u % 2]
            ts = START + 60 + u * 60.0
            log.log_exposure(f"u{u}", "ranker", arm, f"u{u}", ts, [1])
            if rng.random() < 0.10:
                log.log_outcome(f"u{u}", "click", 1.0, ts + 1, 1)
    config = tmp_path / "experiments.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return config, tmp_path / "log"


def _report(config, log, *extra):
    result = CliRunner().invoke(cli, ["report", str(config), "--log", str(log), "--out", str(log / "r"), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def _plan(out: str) -> str:
    return re.search(r"^plan[ :].*$", out, re.M).group(0)


def _tau(out: str) -> str:
    return re.search(r"tau [^;]*", _plan(out)).group(0)


def test_deleting_old_log_files_does_not_change_tau(logged):
    config, log = logged
    first = _report(config, log)
    assert "pre-period" in _tau(first)
    for path in log.glob("*-2025-01-0*.jsonl"):  # retention deletes the pre-period days
        path.unlink()
    second = _report(config, log)
    assert _tau(second) == _tau(first)
    assert _plan(second) == _plan(first)  # same plan id, same frozen time


def test_the_plan_is_written_once_next_to_the_config_and_holds_the_whole_design(logged):
    config, log = logged
    _report(config, log)
    path = config.parent / "experiments.plans" / "ranker" / "v1.json"
    before = path.read_bytes()
    plan = json.loads(before)
    assert plan["tau_source"] == "pre-period" and plan["tau"] > 0
    assert plan["gs_look_units"] == [200, 400, 600, 800, 1000] and "O'Brien-Fleming" in plan["alpha_spending"]
    assert plan["analysis"]["mde"] == 0.1 and plan["metrics"] == ["ctr", "conversion", "reward"]
    assert plan["plan_id"].startswith("ranker@v1-")
    _report(config, log)
    assert path.read_bytes() == before


def test_an_edited_config_does_not_replan_silently_and_replan_is_recorded(logged):
    config, log = logged
    first = _report(config, log)
    edited = yaml.safe_load(config.read_text())
    edited["experiments"][0]["analysis"]["alpha"] = 0.2
    config.write_text(yaml.safe_dump(edited))
    second = _report(config, log)
    assert _plan(second) == _plan(first) and "alpha 0.05" in _plan(second)
    assert "WARNING: the config's analysis.{alpha} changed" in second
    third = _report(config, log, "--replan", "alpha raised after review")
    assert re.search(r"^plan ranker@v2-", third, re.M) and "alpha 0.2" in _plan(third)
    assert "REPLANNED from v1: alpha raised after review" in third
    assert (config.parent / "experiments.plans" / "ranker" / "v1.json").exists()
    fourth = _report(config, log)  # later reports read v2
    assert _plan(fourth) == _plan(third) and "WARNING" not in fourth


def test_replan_needs_a_reason(logged):
    config, log = logged
    result = CliRunner().invoke(cli, ["report", str(config), "--log", str(log), "--replan", " "])
    assert result.exit_code == 1 and "--replan" in result.output
