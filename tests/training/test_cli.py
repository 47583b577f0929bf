"""CLI: bad input gives a one-line message and exit code 2, never a traceback."""

from __future__ import annotations

from click.testing import CliRunner

from recsys.platform.cli import root  # import the root first: it mounts recsys.training.cli


def run(args, tmp_path):
    env = {"RECSYS_MODEL_STORE_URI": str(tmp_path / "models"), "RECSYS_DATA_DIR": str(tmp_path / "nodata")}
    return CliRunner().invoke(root, args, env=env)


def test_missing_data_dir_exits_2(tmp_path):
    for cmd in (["train", "baselines"], ["train", "retrieval"], ["train", "ranking"], ["train", "all"]):
        r = run([*cmd, "--data-dir", str(tmp_path / "missing")], tmp_path)
        assert r.exit_code == 2, (cmd, r.output)
        assert "does not exist" in r.output and "Traceback" not in r.output


def test_default_data_dir_missing_exits_2(tmp_path):
    r = run(["train", "baselines"], tmp_path)
    assert r.exit_code == 2 and "generate data first" in r.output


def test_bad_option_values_exit_2(tmp_path):
    r = run(["train", "retrieval", "--epochs", "0"], tmp_path)
    assert r.exit_code == 2 and "--epochs" in r.output


def test_evaluate_without_models_exits_2(tmp_path, small_dataset_dir):
    r = run(["evaluate", "--data-dir", str(small_dataset_dir)], tmp_path)
    assert r.exit_code == 2 and "no promoted models" in r.output
    r = run(["evaluate", "--data-dir", str(small_dataset_dir), "--model", "als:v9"], tmp_path)
    assert r.exit_code == 2 and "not found" in r.output


def test_train_baselines_cli_writes_versions(tmp_path, small_dataset_dir):
    r = run(["train", "baselines", "--data-dir", str(small_dataset_dir), "--version", "v1", "--promote"], tmp_path)
    assert r.exit_code == 0, r.output
    r = run(["evaluate", "--data-dir", str(small_dataset_dir), "--out", str(tmp_path / "rep.json")], tmp_path)
    assert r.exit_code == 0, r.output
    assert "popularity" in r.output and (tmp_path / "rep.json").exists()
