"""Evaluation protocol: no leaks between what a model saw and what it is scored on.

Each test here failed on the code before the fix it guards (issue 10, part 7).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import scipy.sparse as sp
from click.testing import CliRunner

from recsys.platform.cli import root
from recsys.platform.data.schema import EVENT_COLUMNS
from recsys.training.base import Catalog, IdIndex, user_histories
from recsys.training.evaluation import Evaluator


def run(args, tmp_path):
    env = {"RECSYS_MODEL_STORE_URI": str(tmp_path / "models"), "RECSYS_DATA_DIR": str(tmp_path / "nodata")}
    return CliRunner().invoke(root, args, env=env)


class _RandomLists:
    """Each user gets 20 random items: many distinct lists, so coverage depends on which users are drawn."""

    def recommend(self, users, user_items, n=20, filter_already_liked=True):
        rng = np.random.default_rng(0)
        return np.stack([rng.choice(20_000, n, replace=False) for _ in users]), np.zeros((len(users), n))


def test_coverage_ci_contains_its_point_estimate():
    n_users, n_items = 300, 20_000
    rng = np.random.default_rng(1)
    targets = {u: rng.choice(n_items, 3, replace=False) for u in range(n_users)}
    ev = Evaluator(sp.csr_matrix((n_users, n_items), dtype=np.float32), targets, np.ones((n_items, 1), np.float32),
                   ks=(20,), bootstrap_samples=200)
    m = ev.evaluate("random", _RandomLists()).metrics["coverage@20"]
    assert m.lo <= m.value <= m.hi, m
    assert m.hi - m.lo > 0  # still an interval, not a point


def test_evaluate_refuses_validation_part_for_models_fit_on_validation(tmp_path, small_dataset_dir):
    r = run(["train", "baselines", "--data-dir", str(small_dataset_dir), "--version", "v1", "--promote"], tmp_path)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "models" / "als" / "v1" / "metadata.json").read_text())
    assert meta["params"]["split"] == "global_time" and meta["params"]["fit_on"] == "train+validation"
    r = run(["evaluate", "--data-dir", str(small_dataset_dir), "--part", "validation"], tmp_path)
    assert r.exit_code == 2, r.output
    assert "includes the validation targets" in r.output and "Traceback" not in r.output
    # another split than the one trained on: refused, naming both
    r = run(["evaluate", "--data-dir", str(small_dataset_dir), "--split", "leave_last_out"], tmp_path)
    assert r.exit_code == 2 and "trained on the global_time split" in r.output, r.output
    # without --split the recorded split is used
    r = run(["evaluate", "--data-dir", str(small_dataset_dir), "--model", "popularity:v1",
             "--out", str(tmp_path / "rep.json")], tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "rep.json").read_text())["meta"]["split"] == "global_time"


def test_versions_without_a_recorded_split_are_refused(tmp_path, small_dataset_dir):
    from recsys.platform.model_store import ModelStore

    store = ModelStore(tmp_path / "models")
    with store.write_version("popularity", "old", kind="baseline", params={}) as d:
        (d / "model.npz").write_bytes(b"")
    r = run(["evaluate", "--data-dir", str(small_dataset_dir), "--model", "popularity:old"], tmp_path)
    assert r.exit_code == 2 and "does not record the split" in r.output, r.output


def test_history_order_is_the_same_in_training_and_the_online_store():
    """The online store's recent items must equal the training history row: the stream consumer's Lua
    script LPUSHes "item:ts" per applied event (most recent first) and the reader keeps distinct items."""
    from recsys.features.realtime import merge_user

    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    seq = [(10, "view", 0), (11, "view", 60), (10, "click", 120), (12, "view", 180), (12, "click", 180),
           (13, "view", 240)]
    raw_recent = [f"{item}:{int((t0 + pd.Timedelta(seconds=dt)).timestamp())}" for item, _, dt in reversed(seq)]
    row: dict = {}
    merge_user(row, {}, raw_recent, 20)
    events = pd.DataFrame({"user_id": 1, "item_id": [s[0] for s in seq], "event_type": [s[1] for s in seq],
                           "rating": np.float32(np.nan),
                           "timestamp": [t0 + pd.Timedelta(seconds=s[2]) for s in seq]}).astype(EVENT_COLUMNS)
    cat = Catalog(users=IdIndex.from_ids([1]), items=IdIndex.from_ids([10, 11, 12, 13]))
    hist = user_histories(events, cat, 20)[0]
    trained = cat.items.id_of(hist[hist >= 0])
    assert row["user_recent_item_ids"] == trained.tolist() == [13, 12, 10, 11]


def test_default_tuning_never_reads_the_test_window(small_split, small_dataset, repo_root, monkeypatch):
    """benchmarks/quality.py --tune (which chose the EASE/BPR/SASRec defaults) scores on validation only:
    replacing the test window by nothing changes none of its numbers."""
    import importlib.util
    from dataclasses import replace

    spec = importlib.util.spec_from_file_location("quality_bench", repo_root / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality_bench", quality)  # dataclasses look their module up there
    spec.loader.exec_module(quality)
    split, _ = small_split
    grid = {"ease": [{"regularization": 10.0}], "bpr": [{"epochs": 2, "factors": 8}]}
    with_test = quality.tune(small_dataset, split, grid, seed=1)
    without_test = quality.tune(small_dataset, replace(split, test=split.test.iloc[:0]), grid, seed=1)
    assert with_test == without_test and len(with_test) == 2
