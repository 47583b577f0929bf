"""The SASRec Ray Train job: per-worker loop (runs inside Ray) and the driver-side launcher.

Same shape as the two-tower job (``two_tower/job.py``): the windows are written as a parquet table that
each worker streams its shard of (Ray Data, :mod:`recsys.training.tables`), each
epoch reports metrics + a checkpoint via :func:`recsys.training.ray_job.report_epoch`, rank 0
measures validation NDCG@20 / Recall@20 (history = training events, targets = new validation items),
stops after ``patience`` epochs without a better NDCG@20 and the best epoch's weights are exported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys.training.base import Catalog, top_n
from recsys.training.evaluation import hit_matrix, ranking_metrics
from recsys.training.sequential.config import SequentialConfig
from recsys.training.sequential.data import SequenceData, build_sequence_data
from recsys.training.sequential.model import SasRecModel


def build_model(n_items: int, sc: SequentialConfig) -> SasRecModel:
    return SasRecModel(n_items, sc.max_length, sc.embedding_dim, sc.heads, sc.blocks, sc.dropout)


@torch.no_grad()
def validation_metrics(model: SasRecModel, data: SequenceData, k: int = 20) -> dict[str, float]:
    """Validation Recall@k and NDCG@k (the evaluator's definitions) of users with a training history."""
    if len(data.val_users) == 0:
        return {f"val_recall@{k}": float("nan"), f"val_ndcg@{k}": float("nan")}
    was_training = model.training
    model.eval()
    enc = model.encoder
    users = enc(torch.from_numpy(data.val_users), torch.from_numpy(data.val_history)).numpy()
    idx, _ = top_n(users @ enc.item_vectors().numpy().T, k, data.val_exclude, np.arange(len(data.val_users)))
    m = ranking_metrics(hit_matrix(idx, data.val_targets), np.diff(data.val_targets.indptr), k)
    model.train(was_training)
    return {f"val_recall@{k}": float(m["recall"].mean()), f"val_ndcg@{k}": float(m["ndcg"].mean())}


def epochs_since_best(history: list[dict[str, Any]], metric: str) -> int:
    """Epochs run after the best ``metric`` so far (0 when the last one is the best): early stopping's count."""
    values = [h.get(metric, float("nan")) for h in history]
    real = [i for i, v in enumerate(values) if v == v]
    if not real:
        return len(history)
    best = max(real, key=lambda i: (values[i], -i))  # the first epoch reaching the best value
    return len(history) - 1 - best


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker loop; device / equal shards / resume / checkpoints from :mod:`recsys.training.ray_job`.

    Every rank measures validation (the DDP replicas hold the same weights), so all ranks take the same
    early-stopping decision without a collective.
    """
    from recsys.training.ray_job import cpu_copy, local_batch_size, report_epoch, worker_setup
    from recsys.training.tables import epoch_seed, rows_per_worker, shard_batches

    sc = SequentialConfig(**config["sequential"])
    seed = int(config["seed"])
    ctx = worker_setup(config)
    data: SequenceData = ctx.data
    rank, world = ctx.rank, ctx.world
    model = ctx.prepare(build_model(data.n_items, sc))
    opt = torch.optim.Adam(model.parameters(), lr=sc.learning_rate, weight_decay=sc.weight_decay)
    start, history = ctx.resume(model, opt)
    rng = np.random.default_rng(seed + 1000 * rank)
    bs = local_batch_size(sc.batch_size, world)
    sampled = data.n_items > sc.full_softmax_max_items
    q = np.exp(data.log_q.astype(np.float64))
    q /= q.sum()
    (log_q,) = ctx.to(torch.from_numpy(data.log_q))
    for epoch in range(start, sc.epochs):
        if history and epochs_since_best(history, BEST_BY[0]) >= sc.patience:
            break
        ctx.maybe_fail(epoch)
        t0 = time.perf_counter()
        cap = sc.max_windows_per_epoch // world if sc.max_windows_per_epoch else None
        total, steps, rows = 0.0, 0, 0
        model.train()
        for b in shard_batches("train", config["shapes"], bs, epoch_seed(seed, rank, epoch), 8 * bs):
            rows += len(b["inputs"])
            inputs, targets = ctx.to(b["inputs"].long(), b["targets"].long())
            if sampled:
                (neg,) = ctx.to(torch.from_numpy(rng.choice(data.n_items, sc.negatives, p=q)))
                loss = model(inputs, targets, neg, log_q)
            else:
                loss = model(inputs, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
            if cap is not None and rows >= cap:
                break  # the same step on every rank: equal shards, equal batches
        metrics = ctx.epoch_metrics(epoch, loss=total / max(steps, 1), seconds=time.perf_counter() - t0,
                                    rows_per_worker=rows_per_worker(rows, ctx.device))
        metrics.update(validation_metrics(cpu_copy(model), data))
        if rank == 0:
            print(f"[sasrec] epoch {epoch + 1}/{sc.epochs} loss={metrics['loss']:.4f} "
                  f"val_ndcg@20={metrics['val_ndcg@20']:.4f} val_recall@20={metrics['val_recall@20']:.4f} "
                  f"({metrics['seconds']:.1f}s, {steps} steps x {bs} x {world} worker(s), "
                  f"{'sampled' if sampled else 'full'} softmax)", flush=True)
        history.append(metrics)
        report_epoch(model, metrics, history, opt)


BEST_BY = ("val_ndcg@20", "max")
"""The validation metric that picks the exported epoch (CheckpointConfig score) and drives early stopping."""


@dataclass
class TrainedSasRec:
    model: SasRecModel
    data: SequenceData
    history: list[dict[str, Any]]
    seconds: float
    best_epoch: int = 0
    best_metrics: dict[str, Any] | None = None  # the exported epoch's own metrics (weights and numbers together)


def train_sasrec(sc: SequentialConfig, train_events: pd.DataFrame, validation_events: pd.DataFrame,
                 catalog: Catalog, *, seed: int = 42, num_workers: int = 1, cpus_per_worker: float = 1.0,
                 torch_threads: int = 1, storage_path: str = "var/ray_results", use_gpu: bool = False,
                 name: str = "sasrec", dataset_uri: str | None = None) -> TrainedSasRec:
    """Build windows on the driver, run the Ray Train job, return the trained model (CPU, eval mode).

    The windows are written under ``dataset_uri`` (default ``<storage_path>/datasets``) for the workers to stream.
    """
    import dataclasses

    import ray

    from recsys.training.ray_job import BestBy, JobResources, ensure_ray, run_torch_job, storage_uri
    from recsys.training.tables import delete_table, join, write_table

    t0 = time.perf_counter()
    data = build_sequence_data(train_events, validation_events, catalog, sc.max_length, sc.max_windows_per_user,
                               seed=seed)
    if len(data.inputs) == 0:
        raise ValueError("no user has two or more distinct items in the training events: nothing to learn")
    ensure_ray()
    run = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    table = join(dataset_uri or storage_path.rstrip("/") + "/datasets", run, "windows")
    ref = write_table(table, {"inputs": data.inputs.astype(np.int32), "targets": data.targets.astype(np.int32)},
                      seed=seed)
    empty = np.zeros((0, data.inputs.shape[1]), np.int64)
    # the windows stream instead
    lookups = dataclasses.replace(data, inputs=empty, targets=empty, user=np.zeros(0, np.int64))
    try:
        job = run_torch_job(
            train_loop,
            {"sequential": sc.model_dump(), "seed": seed, "torch_threads": torch_threads, "data": ray.put(lookups),
             "shapes": ref.shapes},
            name=run,
            resources=JobResources(num_workers=num_workers, cpus_per_worker=cpus_per_worker, use_gpu=use_gpu,
                                   storage_path=storage_uri(storage_path)),
            best_by=BestBy(*BEST_BY), datasets={"train": ref},
        )
    finally:
        delete_table(table)
    model = build_model(catalog.n_items, sc)
    model.load_state_dict(job.state)
    model.eval()
    return TrainedSasRec(model=model, data=data, history=job.history, seconds=time.perf_counter() - t0,
                         best_epoch=job.best_epoch, best_metrics=job.best_metrics)
