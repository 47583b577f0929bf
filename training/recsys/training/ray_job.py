"""Running a torch training loop as a Ray Train job; the plumbing every training job shares.

The same code runs on one local worker or on many pods of a KubeRay cluster, so everything that
depends on *where* a loop runs lives here, and a job's loop only says what to train:

* **driver side** — :func:`run_torch_job` builds ``TorchTrainer`` from :class:`JobResources`
  (workers, CPUs/GPU per worker, a storage *URI* every node can reach, ``FailureConfig``) and
  :class:`BestBy` (the validation metric the ``CheckpointConfig`` keeps checkpoints by), then reads
  back the **best** checkpoint's weights and the **latest** checkpoint's full metric history;
* **worker side** — :func:`worker_setup` (seeds, threads, the shared lookups, rank/world, device),
  :meth:`WorkerContext.prepare` (model to the worker's device + DDP), :meth:`WorkerContext.resume`
  (weights, optimizer and history from ``ray.train.get_checkpoint()`` after a worker failure) and
  :func:`report_epoch`.

The training rows themselves do not travel in the loop config: the driver writes them as a partitioned
parquet table at the job's dataset URI (:mod:`recsys.training.tables`), ``run_torch_job(datasets=...)``
hands them to ``TorchTrainer`` as Ray Data datasets, and each worker streams its own equal shard
(``ray.train.get_dataset_shard`` + ``iter_torch_batches``: :func:`recsys.training.tables.shard_batches`).
:func:`shard` keeps the same equal-shard semantics for in-process loops (the ranker without Ray).

A loop that uses them (see ``two_tower/job.py``)::

    ctx = worker_setup(config)
    model = ctx.prepare(build_model(ctx.data))
    opt = torch.optim.Adam(model.parameters())
    start, history = ctx.resume(model, opt)
    for epoch in range(start, epochs):
        ctx.maybe_fail(epoch)
        for batch in shard_batches("train", config["shapes"], local_batch_size(bs, ctx.world), seed):
            ...
        report_epoch(model, metrics, history, opt)
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch


class TrainingJobError(RuntimeError):
    """The Ray Train job failed; the message carries the worker's error."""


# ------------------------------------------------------------------------------ driver side
DATA_CPUS = 1.0
"""Free CPU a job needs next to its workers for Ray Data streaming its training rows. Ray Data's read tasks
ask for one whole CPU each by default (and this Ray's V2 parquet reader, not used here, a file-listing task
of one CPU with no knob to lower it): on a cluster with less than this free after the workers (a 1-CPU head
running 2 x 0.25-CPU workers) the workers wait for their first batch forever, so such a cluster is not joined."""


@dataclass(frozen=True)
class JobResources:
    """Where and how a job runs: what ``ScalingConfig`` / ``RunConfig`` / ``FailureConfig`` are built from."""

    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    storage_path: str = "var/ray_results"
    max_failures: int = 2

    @classmethod
    def from_config(cls, cfg) -> JobResources:
        """From a :class:`recsys.training.config.TrainingConfig`."""
        return cls(num_workers=cfg.num_workers, cpus_per_worker=cfg.cpus_per_worker, use_gpu=cfg.use_gpu,
                   storage_path=cfg.storage_path, max_failures=cfg.max_failures)

    def needs(self) -> dict[str, float]:
        """Cluster resources the job takes: the worker group plus :data:`DATA_CPUS` for Ray Data (the v2
        controller itself asks for none)."""
        out = {"CPU": self.num_workers * self.cpus_per_worker + DATA_CPUS}
        if self.use_gpu:
            out["GPU"] = float(self.num_workers)
        return out


@dataclass(frozen=True)
class BestBy:
    """The validation metric that picks the exported checkpoint (``CheckpointConfig`` score)."""

    metric: str
    mode: Literal["max", "min"] = "max"

    def key(self, metrics: dict[str, Any]) -> tuple[bool, float, int]:
        """Sort key: a real value beats NaN/missing, then the better value, then the later epoch."""
        v = metrics.get(self.metric)
        ok = isinstance(v, int | float) and not math.isnan(v)
        score = (float(v) if self.mode == "max" else -float(v)) if ok else -math.inf
        return ok, score, int(metrics.get("epoch", 0))


@dataclass
class JobResult:
    """What the driver gets back: the best epoch's weights and the whole run's history."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    best_epoch: int
    checkpoint_path: str
    resumed: int = 0

    @property
    def best_metrics(self) -> dict[str, Any]:
        return next((h for h in self.history if h.get("epoch") == self.best_epoch),
                    self.history[-1] if self.history else {})


def storage_uri(storage_path: str | os.PathLike) -> str:
    """A storage location Ray Train accepts: URIs (``s3://``, ``gs://``, ``file://``...) untouched,
    a plain path made absolute (and created) because workers may not share the driver's cwd."""
    s = os.fspath(storage_path)
    if "://" in s:
        return s
    p = Path(s).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` / ``RAY_ADDRESS``, else start a private local cluster, unless Ray is up.

    Never ``ray.init()`` without an address: that joins whatever cluster ``ray start`` last started on
    this machine (a `recsys serve start` head, or someone else's). ``recsys train`` chooses and says
    which cluster it uses (:func:`recsys.training.cluster.connect_for_training`) before this runs.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", configure_logging=False,
                 runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})


def worker_error_message(err: BaseException) -> str:
    """The workers' own errors ("rank 1: ValueError: ...") instead of Ray's wrapper text.

    Ray Train v2 raises ``WorkerGroupError`` (``worker_failures``: rank -> exception) or
    ``ControllerError``; the str of either is a multi-screen traceback whose last line is the cause.
    """
    failures = getattr(err, "worker_failures", None)
    if failures:
        parts = [f"rank {rank}: {_last_line(e)}" for rank, e in sorted(failures.items())]
        return "; ".join(parts)
    inner = getattr(err, "controller_failure", None)
    if inner is not None:
        return _last_line(inner)
    return _last_line(err)


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    msg = lines[-1] if lines else ""
    name = type(e).__name__
    cause = getattr(e, "cause", None)  # RayTaskError keeps the user's exception here
    if cause is not None and not isinstance(cause, type(e)):
        name = type(cause).__name__
        msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else msg
    return msg if msg.startswith(name) else f"{name}: {msg}"


def run_torch_job(
    loop: Callable[[dict], None],
    loop_config: dict[str, Any],
    *,
    name: str,
    resources: JobResources,
    best_by: BestBy,
    num_to_keep: int = 2,
    datasets: dict[str, Any] | None = None,
) -> JobResult:
    """Run ``loop`` with ``TorchTrainer``; return the best checkpoint's weights and the full history.

    ``num_to_keep`` checkpoints are kept by ``best_by`` (Ray Train also always keeps the latest, which
    is what a restarted worker group resumes from after a failure). ``datasets`` (name ->
    :class:`recsys.training.tables.TableRef`) become the trainer's Ray Data datasets: each worker streams
    its own equal shard with ``ray.train.get_dataset_shard(name)`` (:func:`recsys.training.tables.shard_batches`).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from recsys.training.tables import dataset_config, read_table

    resources_per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        resources_per_worker["GPU"] = 1.0
    try:
        trainer = TorchTrainer(
            loop,
            train_loop_config={**loop_config, "use_gpu": resources.use_gpu},
            datasets={k: read_table(ref) for k, ref in (datasets or {}).items()} or None,
            dataset_config=dataset_config() if datasets else None,
            scaling_config=ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                         resources_per_worker=resources_per_worker),
            run_config=RunConfig(
                name=name,
                storage_path=storage_uri(resources.storage_path),
                failure_config=FailureConfig(max_failures=resources.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep,
                                                   checkpoint_score_attribute=best_by.metric,
                                                   checkpoint_score_order=best_by.mode),
            ),
        )
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors in several types
        raise TrainingJobError(f"Ray Train job {name} failed: {worker_error_message(e)}") from e
    if result.error is not None:
        raise TrainingJobError(f"Ray Train job {name} failed: {worker_error_message(result.error)}")
    if result.checkpoint is None:
        raise TrainingJobError(f"Ray Train job {name} reported no checkpoint")
    candidates = list(result.best_checkpoints or []) or [(result.checkpoint, result.metrics or {})]
    best_ckpt, best_metrics = max(candidates, key=lambda cm: best_by.key(cm[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with best_ckpt.as_directory() as d:
            state = torch.load(Path(d) / "model.pt", map_location="cpu", weights_only=True)
        with result.checkpoint.as_directory() as d:
            history = json.loads((Path(d) / "history.json").read_text())
    return JobResult(state=state, history=history, best_epoch=int(best_metrics.get("epoch", len(history))),
                     checkpoint_path=best_ckpt.path, resumed=sum(1 for h in history if h.get("resumed")))


# ------------------------------------------------------------------------------ worker side
@dataclass
class WorkerContext:
    """One worker's view of the job: the shared data, its rank, the world size and its device."""

    config: dict[str, Any]
    data: Any
    rank: int
    world: int
    device: torch.device
    resumed_from: int | None = field(default=None)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to this worker's device and wrap it in DDP when ``world > 1``."""
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def to(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(self.device, non_blocking=True) for t in tensors)

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
               ) -> tuple[int, list[dict[str, Any]]]:
        """Load the latest checkpoint Ray Train hands a restarted worker group, if any.

        Returns ``(first epoch to run, history so far)``; ``(0, [])`` on a fresh start.
        """
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return 0, []
        with ckpt.as_directory() as d, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unwrap(model).load_state_dict(torch.load(Path(d) / "model.pt", map_location=self.device,
                                                     weights_only=True))
            if optimizer is not None and (Path(d) / "optimizer.pt").exists():
                optimizer.load_state_dict(torch.load(Path(d) / "optimizer.pt", map_location=self.device,
                                                     weights_only=True))
            history = json.loads((Path(d) / "history.json").read_text())
        self.resumed_from = len(history)
        if self.rank == 0:
            print(f"[ray_job] resumed from the checkpoint of epoch {len(history)}", flush=True)
        return len(history), history

    def epoch_metrics(self, epoch: int, **metrics: Any) -> dict[str, Any]:
        """The metric dict of one epoch (with the world size); the first epoch after a resume is flagged ``resumed``."""
        out = {"epoch": epoch + 1, "workers": self.world, **metrics}  # the world size that really ran
        if self.resumed_from is not None and epoch == self.resumed_from:
            out["resumed"] = True
        return out

    def maybe_fail(self, epoch: int) -> None:
        """Failure drill (``TrainingConfig.fail_once``): one rank's process (default the last) exits once at an epoch.

        The marker file records that the crash happened, so the restarted worker group trains on.
        """
        spec = self.config.get("fail_once")
        if not spec or epoch + 1 != int(spec["epoch"]):
            return
        if self.rank != (self.world - 1 if spec.get("rank") is None else int(spec["rank"])):
            return
        marker = Path(spec["marker"])
        if marker.exists():
            return
        import ray.train

        # a crash is only recoverable from checkpoints the controller has registered: wait for the
        # in-flight reports (the controller polls workers every few seconds) like a real crash later on
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED,
                                               timeout_s=120)
        marker.write_text(json.dumps({"epoch": epoch + 1, "rank": self.rank, "pid": os.getpid()}))
        print(f"[ray_job] failure drill: rank {self.rank} exits at epoch {epoch + 1}", flush=True)
        os._exit(1)


def worker_setup(config: dict[str, Any]) -> WorkerContext:
    """Common start of every per-worker loop: quiet logs, seeded determinism, thread cap, shared data."""
    import logging

    import ray
    import ray.train
    import ray.train.torch

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    seed = int(config["seed"])
    ray.train.torch.enable_reproducibility(seed)
    torch.set_num_threads(int(config["torch_threads"]))
    data = ray.get(config["data"])
    ctx = ray.train.get_context()
    torch.manual_seed(seed)
    device = ray.train.torch.get_device() if config.get("use_gpu") else torch.device("cpu")
    return WorkerContext(config=config, data=data, rank=ctx.get_world_rank(), world=ctx.get_world_size(),
                         device=device)


def shard(n_or_rows: int | np.ndarray, rank: int, world: int, seed: int, epoch: int) -> np.ndarray:
    """This rank's part of a seeded per-epoch shuffle; every rank gets exactly ``len // world`` rows.

    ``DistributedSampler(shuffle=True, drop_last=True)`` semantics: the same permutation on every
    rank (seeded by epoch), the tail that does not divide evenly dropped, then ``[rank::world]``.
    Unequal shards would give ranks different step counts and hang DDP's gradient all-reduce.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n_or_rows)
    usable = (len(perm) // world) * world
    return perm[:usable][rank::world]


def local_batch_size(global_batch_size: int, world: int) -> int:
    """Per-worker batch so the global batch (what DDP averages gradients over) stays what was tuned."""
    return max(1, global_batch_size // world)


def batches(rows: np.ndarray, batch_size: int, min_last: int = 1) -> Iterator[np.ndarray]:
    """Consecutive batches of ``rows``; a tail shorter than ``min_last`` is dropped."""
    for s in range(0, len(rows), batch_size):
        b = rows[s:s + batch_size]
        if len(b) >= min_last:
            yield b


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The unwrapped model on the CPU (itself when already there) for validation with numpy."""
    m = unwrap(model)
    p = next(m.parameters(), None)
    if p is None or p.device.type == "cpu":
        return m
    return copy.deepcopy(m).to("cpu")


def report_epoch(model: torch.nn.Module, metrics: dict[str, Any], history: list[dict[str, Any]],
                 optimizer: torch.optim.Optimizer | None = None) -> None:
    """Report this epoch's metrics from every worker; rank 0 attaches the checkpoint.

    The checkpoint holds the weights (CPU tensors), the optimizer state (for an exact resume) and the
    metric history up to this epoch; Ray Train uploads it to the run's storage.
    """
    import ray.train

    ctx = ray.train.get_context()
    if ctx.get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
        torch.save(state, Path(d) / "model.pt")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), Path(d) / "optimizer.pt")
        (Path(d) / "history.json").write_text(json.dumps(history))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
