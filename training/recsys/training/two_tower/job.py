"""The two-tower Ray Train job: per-worker loop (runs inside Ray) and the driver-side launcher."""

from __future__ import annotations

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
    """Per-worker loop (runs inside a Ray Train worker)."""
    import ray.train
    import ray.train.torch

    from recsys.training.ray_job import worker_setup

    rc = RetrievalConfig(**config["retrieval"])
    seed = int(config["seed"])
    data: RetrievalData
    data, rank, world = worker_setup(config)
    model = build_model(data, rc)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.Adam(model.parameters(), lr=rc.learning_rate, weight_decay=rc.weight_decay)
    rng = np.random.default_rng(seed + 1000 * rank)
    log_q_all = torch.from_numpy(data.log_q)
    n_ex = len(data.ex_item)
    history: list[dict[str, Any]] = []
    for epoch in range(rc.epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng(seed + epoch).permutation(n_ex)[rank::world]
        if rc.max_examples_per_epoch:
            order = order[: rc.max_examples_per_epoch // world]
        total, steps = 0.0, 0
        for s in range(0, len(order) - rc.batch_size // 2, rc.batch_size):
            b = order[s:s + rc.batch_size]
            users = data.ex_user[b].copy()
            users[rng.random(len(b)) < rc.user_id_dropout] = -1
            hist = data.histories(data.ex_user[b], data.ex_pos[b], rc.history_length)
            items = torch.from_numpy(data.ex_item[b])
            loss = model(torch.from_numpy(users), torch.from_numpy(hist), items,
                         log_q_all[items] if rc.logq_correction else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        metrics = {"epoch": epoch + 1, "loss": total / max(steps, 1), "seconds": time.perf_counter() - t0}
        if rank == 0:
            from recsys.training.ray_job import unwrap

            metrics["val_recall@20"] = validation_recall(unwrap(model), data)
            print(f"[two_tower] epoch {epoch + 1}/{rc.epochs} loss={metrics['loss']:.4f} "
                  f"val_recall@20={metrics['val_recall@20']:.4f} ({metrics['seconds']:.1f}s, {steps} steps)",
                  flush=True)
        history.append(metrics)
        from recsys.training.ray_job import report_epoch

        report_epoch(model, metrics, history)


@dataclass
class TrainedTwoTower:
    model: TwoTowerModel
    data: RetrievalData
    history: list[dict[str, Any]]
    seconds: float


def train_two_tower(
    cfg: TrainingConfig,
    train_events: pd.DataFrame,
    validation_events: pd.DataFrame,
    catalog: Catalog,
    items: pd.DataFrame,
    name: str = "two_tower",
) -> TrainedTwoTower:
    """Build examples on the driver, run the Ray Train job, return the trained model (CPU, eval mode)."""
    import ray

    from recsys.training.ray_job import ensure_ray, run_torch_job

    t0 = time.perf_counter()
    rc = cfg.retrieval
    feats = ItemFeatures.build(items, catalog, text_buckets=rc.text_buckets)
    data = build_retrieval_data(train_events, validation_events, catalog, feats, rc.history_length, seed=cfg.seed)
    ensure_ray()
    ref = ray.put(data)
    state, history = run_torch_job(
        train_loop,
        {"retrieval": rc.model_dump(), "seed": cfg.seed, "torch_threads": cfg.torch_threads, "data": ref},
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.seed}",
        num_workers=cfg.num_workers,
        cpus_per_worker=cfg.cpus_per_worker,
        storage_path=cfg.storage_path,
    )
    model = build_model(data, rc)
    model.load_state_dict(state)
    model.eval()
    return TrainedTwoTower(model=model, data=data, history=history, seconds=time.perf_counter() - t0)
