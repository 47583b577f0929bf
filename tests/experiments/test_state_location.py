"""Where the slot ledger and the frozen plans are written is a setting, and an unwritable one is refused.

Issue 23: on a read-only ConfigMap the router kept the slot layout in memory with a warning (another replica,
or the next restart, could compute a different one), and the first report wrote a plans folder beside the
config. Now the ledger folder is ``ledger_dir`` (serving: ``experiments_ledger_dir``; CLI: ``--ledger-dir`` /
RECSYS_EXPERIMENTS_LEDGER_DIR) and the plans folder ``--plans`` / RECSYS_EXPERIMENTS_PLANS_DIR; a folder that
cannot be written is an error naming the setting (ConfigError, CLI exit 1), never a silent fallback.

The machine runs tests as root, which ignores permission bits, so "not writable" is a path below a regular
file (mkdir fails with ENOTDIR): the same OSError path a read-only mount takes.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from recsys.experiments.cli import cli
from recsys.experiments.config import ConfigError
from recsys.experiments.router import ExperimentRouter

CONFIG = """
version: 1
experiments:
  - name: ranker_v2
    variants:
      - {name: control, weight: 50}
      - {name: treatment, weight: 50}
"""


@pytest.fixture
def config_file(tmp_path):
    folder = tmp_path / "configmap"
    folder.mkdir()
    path = folder / "experiments.yaml"
    path.write_text(CONFIG)
    return path


def test_the_ledger_goes_to_the_ledger_dir_and_an_unwritable_one_is_refused(config_file, tmp_path):
    state = tmp_path / "state"
    router = ExperimentRouter.from_file(config_file, ledger_dir=state)
    assert (state / "experiments.slots.json").exists()
    assert not (config_file.parent / "experiments.slots.json").exists()  # the config folder is left alone
    assert ExperimentRouter.from_file(config_file, ledger_dir=state).slots == router.slots  # read back
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="experiments_ledger_dir"):  # was: a warning and an in-memory layout
        ExperimentRouter.from_file(config_file, ledger_dir=blocker / "state")


def test_serving_passes_its_ledger_dir(config_file, tmp_path):
    from recsys.serving.config import ServingConfig
    from recsys.serving.pipeline.experiments import ExperimentGateway

    cfg = ServingConfig(experiments_config=str(config_file), experiments_ledger_dir=str(tmp_path / "ledger"),
                        exposure_log_dir=str(tmp_path / "x"))
    gateway = ExperimentGateway(cfg)
    assert gateway.router.ledger_dir == tmp_path / "ledger"
    assert (tmp_path / "ledger" / "experiments.slots.json").exists()
    assert ServingConfig(experiments_ledger_dir="").experiments_ledger_dir is None  # Helm's unset value


def test_cli_allocate_and_validate_take_the_ledger_dir_and_refuse_an_unwritable_one(config_file, tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["allocate", str(config_file)], env={"RECSYS_EXPERIMENTS_LEDGER_DIR": str(tmp_path / "l")})
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "l" / "experiments.slots.json").read_text())
    ok = runner.invoke(cli, ["validate", str(config_file), "--ledger-dir", str(tmp_path / "l")])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "a-file").write_text("")
    bad = runner.invoke(cli, ["allocate", str(config_file), "--ledger-dir", str(tmp_path / "a-file" / "l")])
    assert bad.exit_code == 1 and "--ledger-dir: cannot write" in bad.output


def test_report_writes_plans_where_told_and_refuses_an_unwritable_folder(config_file, tmp_path):
    runner = CliRunner()
    log = tmp_path / "log"
    made = runner.invoke(cli, ["simulate", str(config_file), "--log", str(log), "--units", "400"])
    assert made.exit_code == 0, made.output
    plans = tmp_path / "plans"
    out = runner.invoke(cli, ["report", str(config_file), "--log", str(log), "--out", str(tmp_path / "r")],
                        env={"RECSYS_EXPERIMENTS_PLANS_DIR": str(plans)})
    assert out.exit_code == 0, out.output
    assert list(plans.glob("*/v1.json")) and not (config_file.parent / "experiments.plans").exists()
    (tmp_path / "a-file").write_text("")
    bad = runner.invoke(cli, ["report", str(config_file), "--log", str(log), "--out", str(tmp_path / "r"),
                              "--plans", str(tmp_path / "a-file" / "plans")])
    assert bad.exit_code == 1
    assert "cannot write under" in bad.output and "--plans" in bad.output
