"""Training tables as partitioned parquet datasets at a URI, streamed to Ray Train workers by Ray Data.

Why: a Ray Train job used to get its whole training set through ``train_loop_config`` (one object every
worker fetched in full, then sliced). Now the driver writes the rows once to ``<dataset_uri>/<run>/<table>/``
(a local directory, ``file://`` on a shared mount, or ``s3://``/``gs://`` through pyarrow's filesystems),
the trainer gets ``datasets={"train": ray.data.read_parquet(...)}``, and each worker streams only its own
shard with ``ray.train.get_dataset_shard("train")``: adding workers spreads the rows instead of copying them.

* Rows are written in a seeded random order across at least ``MIN_FILES`` files, so every block is a
  random sample and the shards Ray Data hands out are statistically alike.
* :func:`dataset_config` asks Ray Data for ``preserve_order``: the split of blocks among workers is then
  deterministic (Ray Data ignores locality hints to guarantee it), so a worker group restarted after a
  failure sees the same rows per rank as the uninterrupted run, and results repeat.
* Splits are ``equal`` (Ray Train's default): every rank gets the same number of rows, hence the same
  number of steps, so DDP's all-reduce never waits for a rank that has run out of data.
* Columns of more than one dimension (a ranker list's [M, D] features) are stored flattened as
  fixed-size lists; :attr:`TableRef.shapes` says how to fold them back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_FILES = 8
ROWS_PER_FILE = 262_144


@dataclass(frozen=True)
class TableRef:
    """Where a written table lives and what its rows look like (cheap to pass in a loop config)."""

    uri: str
    rows: int
    shapes: dict[str, tuple[int, ...]]  # per-row shape of each column (() for scalars)


def resolve(uri: str | os.PathLike) -> tuple[Any, str]:
    """``(pyarrow filesystem, path)`` for a local path (made absolute), ``file://``, ``s3://``, ``gs://`` ..."""
    import pyarrow.fs as pafs

    s = os.fspath(uri)
    if "://" not in s:
        s = str(Path(s).expanduser().resolve())
    return pafs.FileSystem.from_uri(s)


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for paths and URIs alike (``Path`` would collapse ``s3://`` into ``s3:/``)."""
    return "/".join([os.fspath(base).rstrip("/"), *parts])


def write_table(uri: str, columns: dict[str, np.ndarray], seed: int, rows_per_file: int = ROWS_PER_FILE,
                min_files: int = MIN_FILES) -> TableRef:
    """Write ``columns`` (equal first dimension) as ``part-NNNNN.parquet`` files under ``uri``, rows shuffled.

    An existing table at ``uri`` is replaced. Returns the :class:`TableRef` the trainer reads.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"table columns differ in length: { {k: len(v) for k, v in columns.items()} }")
    n = lengths.pop()
    if n == 0:
        raise ValueError(f"no rows to write to {uri}")
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)
    fs.delete_dir_contents(path, missing_dir_ok=True)
    order = np.random.default_rng([seed, 7919]).permutation(n)
    files = max(min(min_files, n), math.ceil(n / rows_per_file))
    shapes = {k: tuple(v.shape[1:]) for k, v in columns.items()}
    for f, rows in enumerate(np.array_split(order, files)):
        arrays = {}
        for k, v in columns.items():
            part = np.ascontiguousarray(v[rows])
            if part.ndim == 1:
                arrays[k] = pa.array(part)
            elif part.size == 0:  # e.g. a ranker without sparse features: arrow lists need a width >= 1, so a
                arrays[k] = pa.array(np.zeros(len(part), part.dtype))  # placeholder; restore_shapes rebuilds it
            else:
                width = int(np.prod(part.shape[1:]))
                arrays[k] = pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), width)
        with fs.open_output_stream(f"{path}/part-{f:05d}.parquet") as out:
            pq.write_table(pa.table(arrays), out)
    return TableRef(uri=uri, rows=n, shapes=shapes)


def delete_table(uri: str) -> None:
    """Remove a table written by :func:`write_table` (a job's scratch copy of its training rows)."""
    fs, path = resolve(uri)
    fs.delete_dir(path)


def read_table(ref: TableRef):
    """The table as a lazy ``ray.data.Dataset`` (nothing is read until a worker iterates its shard); V1
    datasource, see :mod:`recsys.platform.data.ray_parquet` for why."""
    from recsys.platform.data.ray_parquet import read_parquet

    fs, path = resolve(ref.uri)
    return read_parquet(path, filesystem=fs)


def dataset_config():
    """Ray Train's ``DataConfig`` for these tables: equal shards in a deterministic (order-preserving) split."""
    import copy

    from ray.data.context import DataContext
    from ray.train import DataConfig

    options = copy.deepcopy(DataContext.get_current().execution_options)  # Train's default ingest options
    options.preserve_order = True
    return DataConfig(execution_options=options)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The local-shuffle seed of one rank's epoch: its own order every epoch, the same one after a resume."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def shard_batches(name: str, shapes: dict[str, tuple[int, ...]], batch_size: int, seed: int,
                  shuffle_buffer: int | None = None) -> Iterator[dict[str, Any]]:
    """This worker's shard of the trainer's dataset ``name``, one pass, as dicts of CPU torch tensors.

    Rows are shuffled locally with a buffer of ``shuffle_buffer`` rows seeded by ``seed`` (callers mix the
    epoch and rank into it, so each epoch has its own order and a resumed run draws the same one).
    """
    import ray.train
    import torch

    it = ray.train.get_dataset_shard(name)
    if it is None:
        raise RuntimeError(f"the trainer was given no dataset named {name!r}")
    for batch in it.iter_torch_batches(batch_size=batch_size, device=torch.device("cpu"), drop_last=False,
                                       local_shuffle_buffer_size=shuffle_buffer, local_shuffle_seed=seed):
        yield restore_shapes(batch, shapes)


def restore_shapes(batch: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """A Ray Data torch batch with each column back in its written shape (zero-width columns as empty)."""
    out = {}
    for k, v in batch.items():
        shape = shapes.get(k, ())
        if shape and math.prod(shape) == 0:
            out[k] = v.new_zeros((v.shape[0], *shape))
        else:
            out[k] = v.reshape(-1, *shape) if len(shape) > 1 else v
    return out


def rows_per_worker(rows: int, device: Any = "cpu") -> list[int]:
    """Rows every rank read this epoch, all-gathered (``[rows]`` without a process group).

    ``device``: the worker's device (NCCL gathers GPU tensors only; gloo CPU ones).
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [int(rows)]
    out = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(out, torch.tensor([rows], dtype=torch.int64, device=device))
    return [int(t.item()) for t in out]
