"""The two-tower Ray Train job: per-worker loop (runs inside Ray) and the driver-side launcher."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys.training.base import Catalog, top_n
from recsys.training.config import RetrievalConfig, TrainingConfig
from recsys.training.item_features import ItemFeatures
from recsys.training.two_tower.data import RetrievalData, build_retrieval_data
from recsys.training.two_tower.model import TwoTowerModel
from recsys.training.two_tower.optim import TwoTowerOptimizer


def build_model(data: RetrievalData, rc: RetrievalConfig) -> TwoTowerModel:
    return TwoTowerModel(
        n_users=data.n_users,
        n_items=data.n_items,
        item_genres=torch.from_numpy(data.item_genres),
        item_tokens=torch.from_numpy(data.item_tokens),
        text_buckets=data.text_buckets,
        dim=rc.embedding_dim,
        hidden=rc.hidden_dim,
        temperature=rc.temperature,
        sparse_embeddings=rc.sparse_embeddings,
    )


@torch.no_grad()
def validation_recall(model: TwoTowerModel, data: RetrievalData, k: int = 20) -> float:
    """Recall@k on the validation users (history = training events), in eval mode."""
    if len(data.val_users) == 0:
        return float("nan")
    model.eval()
    items = model.item_embeddings(data.n_items).numpy()
    users = model.user_tower(torch.from_numpy(data.val_users), torch.from_numpy(data.val_history)).numpy()
    idx, _ = top_n(users @ items.T, k, data.val_exclude, np.arange(len(data.val_users)))
    t = data.val_targets
    hits = np.array([np.isin(idx[r], t.indices[t.indptr[r]:t.indptr[r + 1]]).sum() for r in range(len(idx))])
    model.train()
    return float(np.mean(hits / np.maximum(np.diff(t.indptr), 1)))


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker loop (runs inside a Ray Train worker); plumbing from :mod:`recsys.training.ray_job`.

    The positives stream from this worker's shard of the ``train`` table (user, position, item);
    ``ctx.data`` holds only the lookups (user sequences, item features, ``log_q``, the validation users).
    """
    from recsys.training.ray_job import cpu_copy, local_batch_size, report_epoch, worker_setup
    from recsys.training.tables import epoch_seed, rows_per_worker, shard_batches

    rc = RetrievalConfig(**config["retrieval"])
    seed = int(config["seed"])
    ctx = worker_setup(config)
    data: RetrievalData = ctx.data
    rank, world = ctx.rank, ctx.world
    model = ctx.prepare(build_model(data, rc))
    opt = TwoTowerOptimizer(model, rc.learning_rate, rc.weight_decay)
    start, history = ctx.resume(model, opt)
    (log_q_all,) = ctx.to(torch.from_numpy(data.log_q))
    bs = local_batch_size(rc.batch_size, world)
    cap = rc.max_examples_per_epoch // world if rc.max_examples_per_epoch else None
    for epoch in range(start, rc.epochs):
        ctx.maybe_fail(epoch)
        t0 = time.perf_counter()
        rng = np.random.default_rng([seed, 1000 + rank, epoch])  # per epoch: a resumed run draws the same
        total, steps, rows = 0.0, 0, 0
        for b in shard_batches("train", config["shapes"], bs, epoch_seed(seed, rank, epoch), 8 * bs):
            rows += len(b["item"])
            if len(b["item"]) < bs // 2 + 1:
                continue  # a short tail (the same on every rank: the shards are equal)
            ex_user, ex_pos = b["user"].numpy().astype(np.int64), b["pos"].numpy().astype(np.int64)
            users = ex_user.copy()
            users[rng.random(len(users)) < rc.user_id_dropout] = -1
            hist = data.histories(ex_user, ex_pos, rc.history_length)
            u, h, items = ctx.to(torch.from_numpy(users), torch.from_numpy(hist), b["item"].long())
            loss = model(u, h, items, log_q_all[items] if rc.logq_correction else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
            if cap is not None and rows >= cap:
                break  # every rank stops at the same step: equal shards, equal batches
        metrics = ctx.epoch_metrics(epoch, loss=total / max(steps, 1), seconds=time.perf_counter() - t0,
                                    rows_per_worker=rows_per_worker(rows, ctx.device))
        if rank == 0:
            metrics["val_recall@20"] = validation_recall(cpu_copy(model), data)
            print(f"[two_tower] epoch {epoch + 1}/{rc.epochs} loss={metrics['loss']:.4f} "
                  f"val_recall@20={metrics['val_recall@20']:.4f} ({metrics['seconds']:.1f}s, {steps} steps "
                  f"x {bs} x {world} worker(s), rows per worker {metrics['rows_per_worker']})", flush=True)
        history.append(metrics)
        report_epoch(model, metrics, history, opt)


BEST_BY = ("val_recall@20", "max")
"""The validation metric that picks the exported epoch (CheckpointConfig score)."""


@dataclass
class TrainedTwoTower:
    model: TwoTowerModel
    data: RetrievalData
    history: list[dict[str, Any]]
    seconds: float
    best_epoch: int = 0

    @property
    def best_metrics(self) -> dict[str, Any]:
        """Metrics of the exported (best-validation) epoch."""
        return next((h for h in self.history if h.get("epoch") == self.best_epoch),
                    self.history[-1] if self.history else {})


def train_two_tower(
    cfg: TrainingConfig,
    train_events: pd.DataFrame,
    validation_events: pd.DataFrame,
    catalog: Catalog,
    items: pd.DataFrame,
    name: str = "two_tower",
) -> TrainedTwoTower:
    """Build examples on the driver, run the Ray Train job, return the best epoch's model (CPU, eval mode)."""
    import ray

    from recsys.training.ray_job import BestBy, JobResources, ensure_ray, run_torch_job
    from recsys.training.tables import delete_table, join, write_table

    t0 = time.perf_counter()
    rc = cfg.retrieval
    feats = ItemFeatures.build(items, catalog, text_buckets=rc.text_buckets)
    data = build_retrieval_data(train_events, validation_events, catalog, feats, rc.history_length, seed=cfg.seed)
    ensure_ray()
    run = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.seed}"
    table = join(cfg.datasets_uri(), run, "examples")
    ref = write_table(table, {"user": data.ex_user.astype(np.int32), "pos": data.ex_pos.astype(np.int32),
                              "item": data.ex_item.astype(np.int32)}, seed=cfg.seed)
    empty = np.zeros(0, np.int64)
    lookups = dataclasses.replace(data, ex_user=empty, ex_pos=empty, ex_item=empty)  # the rows stream instead
    try:
        job = run_torch_job(
            train_loop,
            {"retrieval": rc.model_dump(), "seed": cfg.seed, "torch_threads": cfg.torch_threads,
             "data": ray.put(lookups), "shapes": ref.shapes,
             "fail_once": cfg.fail_once.model_dump() if cfg.fail_once else None},
            name=run, resources=JobResources.from_config(cfg), best_by=BestBy(*BEST_BY), datasets={"train": ref})
    finally:
        delete_table(table)
    model = build_model(data, rc)
    model.load_state_dict(job.state)
    model.eval()
    return TrainedTwoTower(model=model, data=data, history=job.history, seconds=time.perf_counter() - t0,
                           best_epoch=job.best_epoch)
