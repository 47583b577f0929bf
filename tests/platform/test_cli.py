"""The `recsys` CLI root: data and model commands, exit codes and messages on bad input."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from recsys.platform.cli import root
from recsys.platform.config import ConfigError, load_config
from recsys.platform.model_store import ModelStore


def test_config_env_overrides_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model_store_uri: /a\nseed: 3\n")
    cfg = load_config(f, env={"RECSYS_SEED": "9"})
    assert cfg.model_store_uri == "/a" and cfg.seed == 9
    f.write_text("seed: [1]\n")
    try:
        load_config(f, env={})
    except ConfigError as e:
        assert "'seed'" in str(e)
    else:
        raise AssertionError("bad seed accepted")


def test_data_generate_and_info(tmp_path):
    out = tmp_path / "data"
    r = CliRunner().invoke(root, ["data", "generate", "--out", str(out), "--users", "50", "--items", "40",
                                  "--events", "2000"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(root, ["data", "info", "--dir", str(out)])
    assert r.exit_code == 0 and '"users": 50' in r.output


def test_data_info_missing_dir_is_a_clean_error(tmp_path):
    r = CliRunner().invoke(root, ["data", "info", "--dir", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output


def test_models_promote_reports_why(tmp_path):
    store_dir = tmp_path / "models"
    store = ModelStore(store_dir)
    with store.write_version("als", "v1", kind="baseline") as d:
        np.save(d / "x.npy", np.zeros(3))
    env = {"RECSYS_MODEL_STORE_URI": str(store_dir)}
    r = CliRunner(env=env).invoke(root, ["models", "promote", "als", "v1"])
    assert r.exit_code == 0 and "promoted als/v1" in r.output
    r = CliRunner(env=env).invoke(root, ["models", "promote", "als", "v2"])
    assert r.exit_code == 2 and "not found" in r.output and "still serving: v1" in r.output
    r = CliRunner(env=env).invoke(root, ["models", "list"])
    assert "* v1" in r.output
