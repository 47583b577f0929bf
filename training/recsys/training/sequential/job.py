"""The SASRec Ray Train job: per-worker loop (runs inside Ray) and the driver-side launcher.

Same shape as the two-tower job (``two_tower/job.py``): windows go through the object store, each
epoch reports metrics + a checkpoint via :func:`recsys.training.ray_job.report_epoch`, rank 0
measures validation Recall@20 (history = training events, targets = new validation items).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys.training.base import Catalog, top_n
from recsys.training.sequential.config import SequentialConfig
from recsys.training.sequential.data import SequenceData, build_sequence_data
from recsys.training.sequential.model import SasRecModel


def build_model(n_items: int, sc: SequentialConfig) -> SasRecModel:
    return SasRecModel(n_items, sc.max_length, sc.embedding_dim, sc.heads, sc.blocks, sc.dropout)


@torch.no_grad()
def validation_recall(model: SasRecModel, data: SequenceData, k: int = 20) -> float:
    if len(data.val_users) == 0:
        return float("nan")
    model.eval()
    enc = model.encoder
    users = enc(torch.from_numpy(data.val_users), torch.from_numpy(data.val_history)).numpy()
    idx, _ = top_n(users @ enc.item_vectors().numpy().T, k, data.val_exclude, np.arange(len(data.val_users)))
    t = data.val_targets
    hits = np.array([np.isin(idx[r], t.indices[t.indptr[r]:t.indptr[r + 1]]).sum() for r in range(len(idx))])
    model.train()
    return float(np.mean(hits / np.maximum(np.diff(t.indptr), 1)))


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker loop; device / equal shards / resume / checkpoints from :mod:`recsys.training.ray_job`."""
    from recsys.training.ray_job import cpu_copy, local_batch_size, report_epoch, shard, worker_setup

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
    for epoch in range(start, sc.epochs):
        ctx.maybe_fail(epoch)
        t0 = time.perf_counter()
        order = shard(len(data.inputs), rank, world, seed, epoch)
        if sc.max_windows_per_epoch:
            order = order[: sc.max_windows_per_epoch // world]
        total, steps = 0.0, 0
        model.train()
        for s in range(0, len(order), bs):
            b = order[s:s + bs]
            inputs, targets, negatives = ctx.to(torch.from_numpy(data.inputs[b]), torch.from_numpy(data.targets[b]),
                                                torch.from_numpy(rng.integers(0, data.n_items, sc.negatives)))
            loss = model(inputs, targets, negatives)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        metrics = ctx.epoch_metrics(epoch, loss=total / max(steps, 1), seconds=time.perf_counter() - t0)
        if rank == 0:
            metrics["val_recall@20"] = validation_recall(cpu_copy(model), data)
            print(f"[sasrec] epoch {epoch + 1}/{sc.epochs} loss={metrics['loss']:.4f} "
                  f"val_recall@20={metrics['val_recall@20']:.4f} ({metrics['seconds']:.1f}s, {steps} steps "
                  f"x {bs} x {world} worker(s))", flush=True)
        history.append(metrics)
        report_epoch(model, metrics, history, opt)


BEST_BY = ("val_recall@20", "max")
"""The validation metric that picks the exported epoch (CheckpointConfig score)."""


@dataclass
class TrainedSasRec:
    model: SasRecModel
    data: SequenceData
    history: list[dict[str, Any]]
    seconds: float


def train_sasrec(sc: SequentialConfig, train_events: pd.DataFrame, validation_events: pd.DataFrame,
                 catalog: Catalog, *, seed: int = 42, num_workers: int = 1, cpus_per_worker: float = 1.0,
                 torch_threads: int = 1, storage_path: str = "var/ray_results", use_gpu: bool = False,
                 name: str = "sasrec") -> TrainedSasRec:
    """Build windows on the driver, run the Ray Train job, return the trained model (CPU, eval mode)."""
    import ray

    from recsys.training.ray_job import BestBy, JobResources, ensure_ray, run_torch_job, storage_uri

    t0 = time.perf_counter()
    data = build_sequence_data(train_events, validation_events, catalog, sc.max_length, sc.max_windows_per_user,
                               seed=seed)
    if len(data.inputs) == 0:
        raise ValueError("no user has two or more distinct items in the training events: nothing to learn")
    ensure_ray()
    job = run_torch_job(
        train_loop,
        {"sequential": sc.model_dump(), "seed": seed, "torch_threads": torch_threads, "data": ray.put(data)},
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{seed}",
        resources=JobResources(num_workers=num_workers, cpus_per_worker=cpus_per_worker, use_gpu=use_gpu,
                               storage_path=storage_uri(storage_path)),
        best_by=BestBy(*BEST_BY),
    )
    model = build_model(catalog.n_items, sc)
    model.load_state_dict(job.state)
    model.eval()
    history = job.history
    return TrainedSasRec(model=model, data=data, history=history, seconds=time.perf_counter() - t0)
