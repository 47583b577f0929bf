"""The ranking Ray Train job: a listwise (softmax over each user's candidate list) or pointwise
(BCE, kept as a comparison) ranker on cross features + feature-store features."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recsys.platform.ranking_features import select_columns
from recsys.training.config import RankingConfig, TrainingConfig
from recsys.training.ranking.data import RankingExamples
from recsys.training.ranking.model import DeepFmRanker, MlpRanker
from recsys.training.ray_job import BestBy

_LOG_MARKERS = ("_views_", "_clicks_", "_purchases_", "_ratings_", "days", "age", "_rank")


def log_columns(names: list[str]) -> list[int]:
    """Count-like, duration and rank columns get a signed log1p before standardisation."""
    return [j for j, n in enumerate(names) if any(m in n for m in _LOG_MARKERS)]


def sparse_vocab(n_items: int, n_users: int, names: list[str]) -> list[int]:
    """Hash sizes (raw id mod size): a power of two >= 2x the entity count, capped at 2^20."""
    def size(n: int) -> int:
        return int(min(1 << 20, 1 << int(np.ceil(np.log2(max(2 * n, 16))))))

    sizes = {"item_id": size(n_items), "user_id": size(n_users)}
    return [sizes[name] for name in names]


def build_ranker(n_dense: int, vocab: list[int], names: list[str], rc: RankingConfig) -> torch.nn.Module:
    """The scorer; an MLP ranker starts out as exactly the retrieval order (see :func:`start_from_retrieval`)."""
    cls = MlpRanker if rc.model == "mlp" else DeepFmRanker
    model = cls(n_dense, vocab, dim=rc.embedding_dim, hidden=tuple(rc.hidden_dims), log_columns=log_columns(names))
    if isinstance(model, MlpRanker):
        start_from_retrieval(model, names)
    return model


def start_from_retrieval(model: MlpRanker, names: list[str], column: str = "two_tower_score") -> None:
    """Linear part = the standardised two-tower score, MLP output 0: the untrained ranker IS retrieval order.

    Training then moves away from it only as far as the label windows justify; with few lists
    (MovieLens leave-last-out: ~200) a randomly initialised ranker stayed worse than retrieval.
    """
    if column not in names:
        return
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
        model.linear.weight[0, names.index(column)] = 1.0


def effective_batch_size(rc: RankingConfig, n_lists: int, min_steps_per_epoch: int = 20) -> int:
    """Lists per step, lowered on small data so an epoch still makes ``min_steps_per_epoch`` updates."""
    return int(max(4, min(rc.batch_size, n_lists // min_steps_per_epoch)))


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


def list_ndcg(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, k: int = 20) -> float:
    """Mean NDCG@k over lists with a positive, each list ordered by ``logits`` ([G, M], ``mask`` = real slots).

    The ranker's job is the order inside one user's list; AUC pooled across lists also rewards separating
    users with many positives from users with few, which a listwise model never has to do.
    """
    scores = np.where(mask, logits, -np.inf)
    rel = np.where(mask, labels > 0.5, False)
    keep = rel.any(axis=1)
    if not keep.any():
        return float("nan")
    scores, rel = scores[keep], rel[keep]
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (np.take_along_axis(rel, order, axis=1) * disc).sum(axis=1)
    idcg = np.cumsum(disc)[np.minimum(rel.sum(axis=1), k) - 1]
    return float((dcg / idcg).mean())


def group_index(group: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[G, M] row indices of each group among ``rows`` (-1 padded): the listwise batches."""
    rows = rows[np.argsort(group[rows], kind="stable")]
    g = group[rows]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(rows) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(rows)])
    out = np.full((len(starts), int(sizes.max(initial=1))), -1, dtype=np.int64)
    for k, (s, n) in enumerate(zip(starts, sizes, strict=True)):
        out[k, :n] = rows[s:s + n]
    return out


def listwise_loss(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each list, the target spread evenly over its positives (ListNet)."""
    logp = torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
    target = label * mask
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1.0)
    return -(target * logp.masked_fill(~mask, 0.0)).sum(dim=1).mean()


def padded_lists(dense: torch.Tensor, sparse: torch.Tensor, label: torch.Tensor, groups: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lists ``groups`` ([G, M] row indices, -1 padded) as [G, M, D] / [G, M, S] / [G, M]; label -1 marks padding."""
    idx = torch.from_numpy(groups).to(dense.device)
    flat = idx.clamp_min(0).reshape(-1)
    g, m = idx.shape
    lab = torch.where(idx >= 0, label[flat].reshape(g, m), torch.full_like(idx, -1, dtype=label.dtype))
    return dense[flat].reshape(g, m, -1), sparse[flat].reshape(g, m, -1), lab


def list_loss(model: torch.nn.Module, dense: torch.Tensor, sparse: torch.Tensor, label: torch.Tensor,
              listwise: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, logits [G, M], mask [G, M])`` of padded lists (label < 0 marks padding)."""
    g, m = label.shape
    mask = label >= 0
    logits = model(dense.reshape(g * m, -1), sparse.reshape(g * m, -1)).reshape(g, m)
    y = label.clamp_min(0)
    loss = listwise_loss(logits, y, mask) if listwise else F.binary_cross_entropy_with_logits(logits[mask], y[mask])
    return loss, logits, mask


def fit_ranker(model: torch.nn.Module, data: dict[str, Any], rc: RankingConfig, seed: int, rank: int = 0,
               world: int = 1, on_epoch=None, ctx: Any = None, stream: dict[str, tuple[int, ...]] | None = None
               ) -> list[dict[str, Any]]:
    """The epochs: AdamW over shuffled batches of lists (listwise) or of their rows (bce); per-epoch metrics.

    Shared by the Ray Train loop and in-process training. In-process the training lists are gathered from
    ``data`` (``train_groups``). With ``stream`` (the table's column shapes) they stream instead from this
    worker's equal shard of the trainer's ``train`` table (one row per list, Ray Data), and ``ctx`` (a
    :class:`~recsys.training.ray_job.WorkerContext`) runs the cluster plumbing: tensors on the worker's
    device, resume from the latest checkpoint, the failure drill and ``on_epoch`` reporting with the
    optimizer state. Rank 0 validates on ``val_groups`` of ``data``'s rows either way.
    """
    from recsys.training.ray_job import cpu_copy, local_batch_size, shard
    from recsys.training.tables import epoch_seed, rows_per_worker, shard_batches

    opt = torch.optim.AdamW(model.parameters(), lr=rc.learning_rate, weight_decay=rc.weight_decay)
    start, history = ctx.resume(model, opt) if ctx is not None else (0, [])
    to = ctx.to if ctx is not None else (lambda *t: t)
    cpu = tuple(torch.from_numpy(data[k]) for k in ("dense", "sparse", "label"))
    val_groups = data["val_groups"]
    listwise = rc.loss == "listwise"
    batch_size = local_batch_size(effective_batch_size(rc, int(data["n_train_lists"])), world)

    def epoch_lists(epoch: int):
        if stream is not None:
            for b in shard_batches("train", stream, batch_size, epoch_seed(seed, rank, epoch), 8 * batch_size):
                yield to(b["dense"], b["sparse"], b["label"])
            return
        dev = to(*cpu)
        order = data["train_groups"][shard(len(data["train_groups"]), rank, world, seed, epoch)]
        for s in range(0, len(order), batch_size):
            yield padded_lists(*dev, order[s:s + batch_size])

    for epoch in range(start, rc.epochs):
        if ctx is not None:
            ctx.maybe_fail(epoch)
        t0 = time.perf_counter()
        total, steps, lists = 0.0, 0, 0
        model.train()
        for dense, sparse, label in epoch_lists(epoch):
            loss, _, _ = list_loss(model, dense, sparse, label, listwise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
            lists += len(label)
        seconds = time.perf_counter() - t0
        metrics = (ctx.epoch_metrics(epoch, loss=total / max(steps, 1), seconds=seconds,
                                     rows_per_worker=rows_per_worker(lists, ctx.device)) if ctx is not None
                   else {"epoch": epoch + 1, "loss": total / max(steps, 1), "seconds": seconds})
        if rank == 0:
            metrics.update(val_loss=float("nan"), val_auc=float("nan"), **{"val_ndcg@20": float("nan")})
            if len(val_groups):
                with torch.no_grad():
                    vd, vs, vl = padded_lists(*cpu, val_groups)
                    vloss, vlogits, vmask = list_loss(cpu_copy(model).eval(), vd, vs, vl, listwise)
                    vy = vl.clamp_min(0)
                    metrics["val_loss"] = float(vloss)
                    metrics["val_auc"] = auc(vy[vmask].numpy(), vlogits[vmask].numpy())
                    metrics["val_ndcg@20"] = list_ndcg(vlogits.numpy(), vy.numpy(), vmask.numpy())
                model.train()
            print(f"[ranker] epoch {epoch + 1}/{rc.epochs} {rc.loss} loss={metrics['loss']:.4f} "
                  f"val_loss={metrics['val_loss']:.4f} val_ndcg@20={metrics['val_ndcg@20']:.4f} "
                  f"val_auc={metrics['val_auc']:.4f} "
                  f"({seconds:.1f}s, {steps} steps x {batch_size} x {world} worker(s))", flush=True)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics, history, opt)
    return history


def train_loop(config: dict[str, Any]) -> None:
    """Per-worker loop; device / equal shards / resume / checkpoints from :mod:`recsys.training.ray_job`."""
    from recsys.training.ray_job import report_epoch, worker_setup

    rc = RankingConfig(**config["ranking"])
    ctx = worker_setup(config)
    model = build_ranker(ctx.data["dense"].shape[1], config["vocab"], config["names"], rc)
    model.mean.copy_(torch.from_numpy(ctx.data["mean"]))
    model.std.copy_(torch.from_numpy(ctx.data["std"]))
    model = ctx.prepare(model)
    fit_ranker(model, ctx.data, rc, int(config["seed"]), ctx.rank, ctx.world, ctx=ctx, stream=config["shapes"],
               on_epoch=lambda metrics, history, opt: report_epoch(model, metrics, history, opt))


BEST_BY = ("val_ndcg@20", "max")
"""The validation metric that picks the exported epoch (CheckpointConfig score): per-list NDCG@20 of the
held-out lists (:func:`list_ndcg`), the quantity the ranker is judged by."""


@dataclass
class TrainedRanker:
    model: torch.nn.Module
    dense_names: list[str]
    sparse_names: list[str]
    vocab: list[int]
    history: list[dict[str, Any]]
    n_examples: int
    n_groups: int
    positive_rate: float
    seconds: float
    dropped: dict[str, str]
    best_epoch: int = 0

    @property
    def best_metrics(self) -> dict[str, Any]:
        """Metrics of the exported (best-validation) epoch."""
        return next((h for h in self.history if h.get("epoch") == self.best_epoch),
                    self.history[-1] if self.history else {})


def train_ranker(cfg: TrainingConfig, examples: RankingExamples, n_items: int, n_users: int,
                 name: str = "ranker", use_ray: bool = True) -> TrainedRanker:
    """Column selection and standardisation stats on the driver, then the Ray Train job (CPU model, eval mode).

    ``use_ray=False`` runs the same epochs in this process (tests, quick experiments).
    """
    import ray

    from recsys.training.ray_job import JobResources, ensure_ray, run_torch_job
    from recsys.training.tables import delete_table, join, write_table

    t0 = time.perf_counter()
    rc = cfg.ranking
    keep, dropped = select_columns(examples.dense, examples.label, examples.group, examples.dense_names)
    names = [examples.dense_names[j] for j in keep]
    dense = np.ascontiguousarray(examples.dense[:, keep])
    vocab = sparse_vocab(n_items, n_users, examples.sparse_names)
    # 10% of groups held out for per-epoch validation loss / AUC
    rng = np.random.default_rng(cfg.seed)
    groups = np.unique(examples.group)
    val_g = rng.choice(groups, size=len(groups) // 10, replace=False) if len(groups) > 10 else groups[:0]
    is_val = np.isin(examples.group, val_g)
    probe = build_ranker(len(names), vocab, names, rc)
    with torch.no_grad():
        x = probe.preprocess(torch.from_numpy(dense[~is_val])).numpy()  # log only (mean 0, std 1)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    train_groups = group_index(examples.group, np.flatnonzero(~is_val))
    data = {
        "dense": dense, "sparse": examples.sparse, "label": examples.label,
        "mean": mean.astype(np.float32), "std": std, "n_train_lists": len(train_groups),
        "train_groups": train_groups, "val_groups": group_index(examples.group, np.flatnonzero(is_val)),
    }
    if not use_ray:
        torch.manual_seed(cfg.seed)
        model = build_ranker(len(names), vocab, names, rc)
        model.mean.copy_(torch.from_numpy(data["mean"]))
        model.std.copy_(torch.from_numpy(data["std"]))
        best: dict[str, Any] = {}

        def keep_best(metrics, history, opt) -> None:  # in-process: the same BEST_BY choice as the Ray job
            if not best or BestBy(*BEST_BY).key(metrics) > BestBy(*BEST_BY).key(best["metrics"]):
                best.update(metrics=dict(metrics), state=copy.deepcopy(model.state_dict()))

        history = fit_ranker(model, data, rc, cfg.seed, on_epoch=keep_best)
        if best:
            model.load_state_dict(best["state"])
        return TrainedRanker(model=model.eval(), dense_names=names, sparse_names=examples.sparse_names, vocab=vocab,
                             history=history, best_epoch=int(best["metrics"]["epoch"]) if best else 0,
                             n_examples=len(examples.label), n_groups=len(groups),
                             positive_rate=float(examples.label.mean()), seconds=time.perf_counter() - t0,
                             dropped=dropped)
    ensure_ray()
    run = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.seed}"
    table = join(cfg.datasets_uri(), run, "lists")
    lists = padded_lists(*(torch.from_numpy(data[k]) for k in ("dense", "sparse", "label")), train_groups)
    ref = write_table(table, dict(zip(("dense", "sparse", "label"), (t.numpy() for t in lists), strict=True)),
                      seed=cfg.seed)
    del lists
    val_rows = np.flatnonzero(is_val)  # validation stays with the loop config (rank 0 scores it every epoch)
    lookups = {"dense": dense[val_rows], "sparse": examples.sparse[val_rows], "label": examples.label[val_rows],
               "val_groups": group_index(examples.group[val_rows], np.arange(len(val_rows))),
               "mean": data["mean"], "std": std, "n_train_lists": len(train_groups)}
    try:
        job = run_torch_job(
            train_loop,
            {"ranking": rc.model_dump(), "seed": cfg.seed, "torch_threads": cfg.torch_threads,
             "vocab": vocab, "names": names, "data": ray.put(lookups), "shapes": ref.shapes,
             "fail_once": cfg.fail_once.model_dump() if cfg.fail_once else None},
            name=run, resources=JobResources.from_config(cfg), best_by=BestBy(*BEST_BY), datasets={"train": ref})
    finally:
        delete_table(table)
    model = build_ranker(len(names), vocab, names, rc)
    model.load_state_dict(job.state)
    model.eval()
    return TrainedRanker(model=model, dense_names=names, sparse_names=examples.sparse_names, vocab=vocab,
                         history=job.history, best_epoch=job.best_epoch, n_examples=len(examples.label),
                         n_groups=len(groups), positive_rate=float(examples.label.mean()),
                         seconds=time.perf_counter() - t0, dropped=dropped)


def feature_spec(trained: TrainedRanker, source_kind: str, rc: RankingConfig, sequential: bool = False
                 ) -> dict[str, Any]:
    """The ``feature_spec.json`` serving reads (docs/contracts.md)."""
    from recsys.platform import ranking_features as rf

    return {
        "dense": trained.dense_names,
        "sparse": [{"name": n, "vocab_size": v, "hash": True, "raw_ids": True}
                   for n, v in zip(trained.sparse_names, trained.vocab, strict=True)],
        "normalization": {},
        "retrieval_score": False,
        "cross_features": [n for n in trained.dense_names if n in rf.CROSS_FEATURES],
        "cross_feature_constants": {"sources": list(rf.SOURCES), "knn_recent_items": rf.KNN_RECENT_ITEMS,
                                    "knn_recency_decay": rf.KNN_RECENCY_DECAY,
                                    "recent_sim_items": rf.RECENT_SIM_ITEMS,
                                    "content_recent_items": rf.CONTENT_RECENT_ITEMS,
                                    "content_recency_decay": rf.CONTENT_RECENCY_DECAY},
        "notes": ("Feed RAW values in 'dense' order. Columns listed in 'cross_features' are computed per request "
                  "by recsys.platform.ranking_features.cross_features (recsys.serving.pipeline.scoring.inputs does "
                  "it); "
                  "the others are online feature-store columns read by name. ranker.pt applies signed log1p to "
                  "'log1p_columns', standardises with its own mean/std, and hashes sparse ids as raw_id mod "
                  "vocab_size; hence 'normalization' is empty (nothing for serving to apply)."),
        "log1p_columns": [trained.dense_names[j] for j in log_columns(trained.dense_names)],
        "dropped_columns": trained.dropped,
        "feature_source": source_kind,
        "candidates": rc.candidates,
        "candidate_sources": {"two_tower": rc.candidates, "item_knn": rc.knn_candidates,
                              "popularity": rc.popularity_candidates,
                              "sasrec": rc.sasrec_candidates if sequential else 0,
                              "content": rc.content_candidates},
        "loss": rc.loss,
        "model": rc.model,
    }
