"""Running a torch training loop as a Ray Train job, shared by the two-tower and ranking jobs.

The same code runs on the local cluster started by ``ray.init()`` or on a remote one named by
``RAY_ADDRESS`` (``ray.init`` reads it): inputs travel through the object store, checkpoints go to
``storage_path`` (use a shared filesystem or s3:// URI on a multi-node cluster).  Each epoch a loop
calls :func:`report_epoch`, which reports metrics and a ``Checkpoint.from_directory`` holding the
model's ``state_dict`` and the metric history, so the driver gets both from the last checkpoint.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class TrainingJobError(RuntimeError):
    """The Ray Train job failed; the message carries the worker's error."""


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` (or RAY_ADDRESS / a new local cluster) unless Ray is already up."""
    import ray

    if not ray.is_initialized():
        # the dashboard serves the state API Ray Train v2 uses to clean up placement groups
        ray.init(address=address, configure_logging=False,
                 runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})


def worker_setup(config: dict[str, Any]) -> tuple[Any, int, int]:
    """Common start of every per-worker loop: quiet logs, seeded determinism, thread cap, shared data.

    Returns ``(data, world_rank, world_size)``; ``config["data"]`` is an object ref put by the driver.
    """
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
    return data, ctx.get_world_rank(), ctx.get_world_size()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def report_epoch(model: torch.nn.Module, metrics: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """Report this epoch's metrics from every worker; rank 0 attaches the checkpoint."""
    import ray.train

    ctx = ray.train.get_context()
    if ctx.get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(unwrap(model).state_dict(), Path(d) / "model.pt")
        (Path(d) / "history.json").write_text(json.dumps(history))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def run_torch_job(
    loop: Callable[[dict], None],
    loop_config: dict[str, Any],
    *,
    name: str,
    num_workers: int,
    cpus_per_worker: float,
    storage_path: str | Path,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Run ``loop`` with ``TorchTrainer`` and return (final state_dict, per-epoch metric history)."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage = str(storage_path)
    if "://" not in storage:
        storage = str(Path(storage).resolve())
        Path(storage).mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors in several types
        raise TrainingJobError(f"Ray Train job {name} failed: {e}") from e
    if result.error is not None:
        raise TrainingJobError(f"Ray Train job {name} failed: {result.error}")
    if result.checkpoint is None:
        raise TrainingJobError(f"Ray Train job {name} reported no checkpoint")
    with result.checkpoint.as_directory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torch.load(Path(d) / "model.pt", map_location="cpu", weights_only=True)
        history = json.loads((Path(d) / "history.json").read_text())
    return state, history
