"""SASRec: causal encoder semantics, Ray Train job -> store -> TorchScript round trip, better than random."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.training.base import user_histories
from recsys.training.evaluation import Evaluator
from recsys.training.sequential.config import SequentialConfig
from recsys.training.sequential.data import windows
from recsys.training.sequential.job import epochs_since_best
from recsys.training.sequential.model import SasRecModel
from tests.training.conftest import small_config


def test_windows_are_cut_from_the_end_and_shifted_by_one():
    seq = np.array([1, 2, 3, 4, 5, 6, 7, 9])
    start = np.array([0, 7, 7, 8])  # user 0: 1..7, user 1: empty, user 2: one item (no window)
    x, y, u = windows(seq, start, n_items=10, length=4, max_per_user=3)
    assert x.tolist() == [[3, 4, 5, 6], [10, 10, 1, 2]]
    assert y.tolist() == [[4, 5, 6, 7], [10, 10, 2, 3]]  # every item after the first is a target once
    assert u.tolist() == [0, 0]
    assert windows(seq, start, n_items=10, length=2, max_per_user=None)[0].shape[0] == 3, "None: whole sequence"


def test_full_softmax_is_cross_entropy_over_the_catalog_at_every_position():
    torch.manual_seed(0)
    m = SasRecModel(n_items=12, max_length=4, dim=8, heads=2, blocks=1, dropout=0.0).eval()
    seq = torch.tensor([[12, 1, 2, 3], [4, 5, 6, 7]])
    tgt = torch.tensor([[12, 2, 3, 9], [5, 6, 7, 8]])
    h = m.encoder.encode(seq)
    logits = h @ m.encoder.item_vectors().T  # [B, L, n_items]
    valid = tgt < 12
    want = -torch.log_softmax(logits[valid], -1).gather(1, tgt[valid].unsqueeze(1)).mean()
    assert torch.allclose(m(seq, tgt), want, atol=1e-6)
    # sampled softmax with logQ: a uniform q is a constant shift, so with every item as a negative it equals
    # the full softmax (the target itself is masked out of the negatives)
    log_q = torch.full((12,), -float(np.log(12)))
    assert torch.allclose(m(seq, tgt, torch.arange(12), log_q), want, atol=1e-5)


def test_early_stopping_counts_epochs_since_the_first_best():
    h = [{"val_ndcg@20": v} for v in (0.1, 0.3, 0.2, 0.3, 0.25)]
    assert epochs_since_best(h, "val_ndcg@20") == 3
    assert epochs_since_best(h[:2], "val_ndcg@20") == 0
    assert epochs_since_best([{"val_ndcg@20": float("nan")}], "val_ndcg@20") == 1


def test_encoder_reads_history_most_recent_first_and_ignores_padding():
    torch.manual_seed(0)
    enc = SasRecModel(n_items=20, max_length=6, dim=16, heads=2, blocks=2, dropout=0.0).eval().encoder
    u = torch.zeros(1, dtype=torch.long)
    a = enc(u, torch.tensor([[5, 4, 3, -1, -1, -1]]))
    assert torch.allclose(a, enc(u, torch.tensor([[5, 4, 3]])), atol=1e-6)  # short history = padded history
    assert not torch.allclose(a, enc(u, torch.tensor([[3, 4, 5]])), atol=1e-4)  # order matters
    # causal: the most recent item sits at the last position; items beyond max_length are dropped
    long = torch.tensor([[5, 4, 3, 2, 1, 0, 7, 8]])
    assert torch.allclose(enc(u, long), enc(u, long[:, :6]), atol=1e-6)
    scripted = torch.jit.script(enc)
    assert torch.allclose(scripted(u, torch.tensor([[5, 4, 3]])), a, atol=1e-5)
    assert not torch.isnan(enc(u, torch.full((1, 6), -1))).any()  # empty history: defined output


@pytest.mark.usefixtures("ray_cluster")
def test_sasrec_job_store_round_trip_and_beats_random(tmp_path, small_dataset_dir, tmp_store):
    from recsys.training.sequential.workflow import SEQUENTIAL_NAME, train_sequential
    from recsys.training.two_tower.artifacts import TwoTowerRecommender
    from recsys.training.workflows import load_inputs

    cfg = small_config(tmp_path, data_dir=small_dataset_dir)
    inputs = load_inputs(cfg)
    sc = SequentialConfig(max_length=10, embedding_dim=16, epochs=3, batch_size=64)
    mv = train_sequential(cfg, inputs, tmp_store, "v1", promote=True, sc=sc, progress=False)
    d = tmp_store.local_path(mv)
    for f in ("item_embeddings.npy", "item_ids.npy", "user_ids.npy", "user_tower.pt", "config.json", "faiss.index"):
        assert (d / f).exists(), f
    conf = json.loads((d / "config.json").read_text())
    assert conf["model"] == "sasrec" and conf["history_length"] == 10
    assert mv.name == SEQUENTIAL_NAME and mv.metadata["params"]["split"] == cfg.split
    history = mv.metadata["params"]["history"]
    assert len(history) == 3 and mv.metrics["val_recall@20"] >= 0
    best = max(history, key=lambda h: (h["val_ndcg@20"], -h["epoch"]))  # weights and metrics of one epoch
    assert mv.metrics["epoch"] == best["epoch"] == mv.metadata["params"]["best_epoch"]
    assert mv.metrics["val_ndcg@20"] == best["val_ndcg@20"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = torch.jit.load(str(d / "user_tower.pt"))
    assert tower(torch.tensor([-1]), torch.tensor([[int(i) for i in range(5)] + [-1] * 5])).shape == (1, 16)
    hist = user_histories(pd.concat([inputs.split.train, inputs.split.validation]), inputs.catalog, 10)
    rec = TwoTowerRecommender.load(d, histories=hist)
    ev = Evaluator.from_split(inputs.dataset, inputs.split, inputs.catalog, ks=(20,), bootstrap_samples=20)

    class Random:
        def recommend(self, users, user_items, n=20, filter_already_liked=True):
            rng = np.random.default_rng(0)
            return np.stack([rng.choice(inputs.catalog.n_items, n, replace=False) for _ in users]), None

    r = ev.evaluate("sasrec", rec).metrics["recall@20"].value
    assert r > 1.5 * ev.evaluate("random", Random()).metrics["recall@20"].value, r


@pytest.mark.usefixtures("ray_cluster")
def test_sasrec_stops_early_and_keeps_the_best_epoch(small_split, tmp_path):
    """A learning rate too small to move validation NDCG: no epoch improves on the first, so the job stops
    after ``patience`` more and exports a best epoch together with that epoch's metrics."""
    from recsys.training.sequential.job import train_sasrec

    split, cat = small_split
    sc = SequentialConfig(max_length=8, embedding_dim=8, blocks=1, epochs=30, patience=2, learning_rate=1e-12,
                          batch_size=256, dropout=0.0)
    tr = train_sasrec(sc, split.train, split.validation, cat, seed=1, storage_path=str(tmp_path / "ray"))
    assert len(tr.history) == 1 + sc.patience, [h["val_ndcg@20"] for h in tr.history]
    best = max(h["val_ndcg@20"] for h in tr.history)
    assert tr.best_metrics["epoch"] == tr.best_epoch and tr.best_metrics["val_ndcg@20"] == best
