"""The ranking Ray Train job (DeepFM on feature-store features + retrieval score)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recsys.training.config import RankingConfig, TrainingConfig
from recsys.training.ranking.data import RankingExamples
from recsys.training.ranking.model import DeepFmRanker

_LOG_MARKERS = ("_views_", "_clicks_", "_purchases_", "_ratings_", "days", "age")


def log_columns(names: list[str]) -> list[int]:
    """Count-like and duration columns get a signed log1p before standardisation."""
    return [j for j, n in enumerate(names) if any(m in n for m in _LOG_MARKERS)]


def sparse_vocab(n_items: int, n_users: int, names: list[str]) -> list[int]:
    """Hash sizes (raw id mod size): a power of two >= 2x the entity count, capped at 2^20."""
    def size(n: int) -> int:
        return int(min(1 << 20, 1 << int(np.ceil(np.log2(max(2 * n, 16))))))

    sizes = {"item_id": size(n_items), "user_id": size(n_users)}
    return [sizes[name] for name in names]


def build_ranker(n_dense: int, vocab: list[int], names: list[str], rc: RankingConfig) -> DeepFmRanker:
    return DeepFmRanker(n_dense, vocab, dim=rc.embedding_dim, hidden=tuple(rc.hidden_dims),
                        log_columns=log_columns(names))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) statistic."""
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker loop; device / equal shards / resume / checkpoints from :mod:`recsys.training.ray_job`."""
    from recsys.training.ray_job import batches, cpu_copy, local_batch_size, report_epoch, shard, worker_setup

    rc = RankingConfig(**config["ranking"])
    seed = int(config["seed"])
    ctx = worker_setup(config)
    data, rank, world = ctx.data, ctx.rank, ctx.world
    model = build_ranker(data["dense"].shape[1], config["vocab"], config["names"], rc)
    model.mean.copy_(torch.from_numpy(data["mean"]))
    model.std.copy_(torch.from_numpy(data["std"]))
    model = ctx.prepare(model)
    opt = torch.optim.AdamW(model.parameters(), lr=rc.learning_rate, weight_decay=rc.weight_decay)
    start, history = ctx.resume(model, opt)
    train_rows, val_rows = data["train_rows"], data["val_rows"]
    dense_cpu, sparse_cpu, label_cpu = (torch.from_numpy(data[k]) for k in ("dense", "sparse", "label"))
    dense, sparse, label = ctx.to(dense_cpu, sparse_cpu, label_cpu)
    bs = local_batch_size(rc.batch_size, world)
    for epoch in range(start, rc.epochs):
        ctx.maybe_fail(epoch)
        t0 = time.perf_counter()
        order = train_rows[shard(len(train_rows), rank, world, seed, epoch)]
        total, steps = 0.0, 0
        model.train()
        for rows in batches(order, bs):
            (b,) = ctx.to(torch.from_numpy(rows))
            loss = F.binary_cross_entropy_with_logits(model(dense[b], sparse[b]), label[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        metrics = ctx.epoch_metrics(epoch, loss=total / max(steps, 1), seconds=time.perf_counter() - t0)
        if rank == 0:
            metrics.update(val_loss=float("nan"), val_auc=float("nan"))
            if len(val_rows):
                with torch.no_grad():
                    m = cpu_copy(model).eval()
                    vb = torch.from_numpy(val_rows)
                    logits = m(dense_cpu[vb], sparse_cpu[vb])
                    metrics["val_loss"] = float(F.binary_cross_entropy_with_logits(logits, label_cpu[vb]))
                    metrics["val_auc"] = auc(data["label"][val_rows], logits.numpy())
                model.train()
            print(f"[ranker] epoch {epoch + 1}/{rc.epochs} loss={metrics['loss']:.4f} "
                  f"val_loss={metrics['val_loss']:.4f} val_auc={metrics['val_auc']:.4f} "
                  f"({metrics['seconds']:.1f}s, {steps} steps x {bs} x {world} worker(s))", flush=True)
        history.append(metrics)
        report_epoch(model, metrics, history, opt)


BEST_BY = ("val_auc", "max")
"""The validation metric that picks the exported epoch (CheckpointConfig score)."""


@dataclass
class TrainedRanker:
    model: DeepFmRanker
    dense_names: list[str]
    sparse_names: list[str]
    vocab: list[int]
    history: list[dict[str, Any]]
    n_examples: int
    positive_rate: float
    seconds: float
    best_epoch: int = 0

    @property
    def best_metrics(self) -> dict[str, Any]:
        """Metrics of the exported (best-validation) epoch."""
        return next((h for h in self.history if h.get("epoch") == self.best_epoch),
                    self.history[-1] if self.history else {})


def train_ranker(cfg: TrainingConfig, examples: RankingExamples, n_items: int, n_users: int,
                 name: str = "ranker") -> TrainedRanker:
    """Standardisation stats on the driver, then the Ray Train job; returns the CPU model in eval mode."""
    import ray

    from recsys.training.ray_job import BestBy, JobResources, ensure_ray, run_torch_job

    t0 = time.perf_counter()
    rc = cfg.ranking
    names = examples.dense_names
    vocab = sparse_vocab(n_items, n_users, examples.sparse_names)
    # 10% of users held out for per-epoch validation loss / AUC
    rng = np.random.default_rng(cfg.seed)
    users = np.unique(examples.user)
    val_users = rng.choice(users, size=max(1, len(users) // 10), replace=False) if len(users) > 10 else users[:0]
    is_val = np.isin(examples.user, val_users)
    probe = build_ranker(len(names), vocab, names, rc)
    with torch.no_grad():
        x = probe.preprocess(torch.from_numpy(examples.dense[~is_val])).numpy()  # log only (mean 0, std 1)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    data = {
        "dense": examples.dense, "sparse": examples.sparse, "label": examples.label,
        "mean": mean.astype(np.float32), "std": std,
        "train_rows": np.flatnonzero(~is_val), "val_rows": np.flatnonzero(is_val),
    }
    ensure_ray()
    job = run_torch_job(
        train_loop,
        {"ranking": rc.model_dump(), "seed": cfg.seed, "torch_threads": cfg.torch_threads,
         "vocab": vocab, "names": names, "data": ray.put(data),
         "fail_once": cfg.fail_once.model_dump() if cfg.fail_once else None},
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.seed}",
        resources=JobResources.from_config(cfg),
        best_by=BestBy(*BEST_BY),
    )
    model = build_ranker(len(names), vocab, names, rc)
    model.load_state_dict(job.state)
    model.eval()
    return TrainedRanker(model=model, dense_names=names, sparse_names=examples.sparse_names, vocab=vocab,
                         history=job.history, best_epoch=job.best_epoch,
                         n_examples=len(examples.label), positive_rate=float(examples.label.mean()),
                         seconds=time.perf_counter() - t0)


def feature_spec(trained: TrainedRanker, source_kind: str, candidates: int) -> dict[str, Any]:
    """The ``feature_spec.json`` serving reads (docs/contracts.md)."""
    return {
        "dense": trained.dense_names,
        "sparse": [{"name": n, "vocab_size": v, "hash": True} for n, v in zip(trained.sparse_names, trained.vocab,
                                                                                 strict=True)],
        "normalization": {},
        "retrieval_score": "retrieval_score" in trained.dense_names,
        "notes": ("Feed RAW values: dense in this column order (retrieval_score = two-tower user.item inner "
                  "product), sparse = raw ids. ranker.pt applies signed log1p to the columns listed in "
                  "'log1p_columns', standardises with its own mean/std, and hashes sparse ids as raw_id mod "
                  "vocab_size; hence 'normalization' is empty (nothing for serving to apply)."),
        "log1p_columns": [trained.dense_names[j] for j in log_columns(trained.dense_names)],
        "feature_source": source_kind,
        "candidates": candidates,
    }
