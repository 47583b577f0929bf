"""``recsys train ...``: baselines, retrieval (two-tower), ranking (DeepFM) and ``all``.

Defaults come from the platform settings handed down by the root command (data_dir,
model_store_uri, seed); options override them.  User-fixable problems (no dataset, unknown
version) exit with code 2 and a one-line message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import click

from recsys.platform.cli import pass_config
from recsys.platform.config import PlatformConfig


class TrainingUsageError(click.ClickException):
    exit_code = 2


DATASET_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")
"""URI schemes pyarrow's filesystems (which write and read the training tables) understand."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where the Ray Train jobs run; the Helm RayJob entrypoints template these flags."""

    cpus_per_worker: float | None = None
    use_gpu: bool | None = None
    storage_path: str | None = None
    dataset_uri: str | None = None
    max_failures: int | None = None
    ray_address: str | None = None


def common_options(f):
    @click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                  help="Dataset directory (default: data_dir setting).")
    @click.option("--seed", type=int, default=None, help="Default: the platform seed.")
    @click.option("--num-workers", type=click.IntRange(min=1), default=None, help="Ray Train workers (default 1).")
    @click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="CPUs reserved per worker, fractions allowed (default 1).")
    @click.option("--use-gpu/--no-use-gpu", default=None,
                  help="One GPU per worker, model and batches on it (default: no).")
    @click.option("--storage-path", default=None,
                  help="Checkpoints and run state: a local path or a URI every node reaches (s3://bucket/x, "
                       "gs://..., file:///shared/x). Default: ray_results next to the data_dir setting.")
    @click.option("--dataset-uri", default=None,
                  help="Where the Ray Train jobs write their training rows as partitioned parquet that the workers "
                       "stream with Ray Data: a local path or a URI every node reaches (s3://bucket/x, file:///x). "
                       "Default: <storage path>/datasets.")
    @click.option("--max-failures", type=click.IntRange(min=-1), default=None,
                  help="Worker-group restarts from the latest checkpoint (default 2, -1 = no limit).")
    @click.option("--ray-address", default=None,
                  help="Ray cluster: host:port / ray://..., or 'local' for a private one. Default: RAY_ADDRESS, "
                       "else a running local cluster with enough free CPUs, else a private local cluster.")
    @click.option("--version", "version", default=None, help="Version id to write (default: timestamp).")
    @click.option("--promote", is_flag=True, help="Promote the new version(s) after writing.")
    @click.option("--split", type=click.Choice(["global_time", "leave_last_out"]), default=None,
                  help="Split protocol (default global_time).")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        kwargs["cluster"] = ClusterOptions(**{k: kwargs.pop(k) for k in (
            "cpus_per_worker", "use_gpu", "storage_path", "dataset_uri", "max_failures", "ray_address")})
        return f(*args, **kwargs)

    return wrapper


def make_config(pcfg: PlatformConfig, data_dir: str | None, seed: int | None, num_workers: int | None,
                split: str | None, epochs: int | None = None, ranking_epochs: int | None = None,
                cluster: ClusterOptions | None = None):
    from recsys.training.config import TrainingConfig

    cluster = cluster or ClusterOptions()
    storage = cluster.storage_path or str(Path(pcfg.data_dir).parent / "ray_results")
    cfg = TrainingConfig.from_platform(pcfg, data_dir=data_dir, seed=seed, num_workers=num_workers, split=split,
                                       cpus_per_worker=cluster.cpus_per_worker, use_gpu=cluster.use_gpu,
                                       max_failures=cluster.max_failures, storage_path=storage,
                                       dataset_uri=cluster.dataset_uri)
    scheme = (cluster.dataset_uri or "").partition("://")[0] if "://" in (cluster.dataset_uri or "") else None
    if scheme is not None and scheme not in DATASET_SCHEMES:
        raise TrainingUsageError(f"--dataset-uri {cluster.dataset_uri}: unsupported scheme {scheme}:// (use a path or "
                                 f"one of {', '.join(s + '://' for s in DATASET_SCHEMES)})")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise TrainingUsageError(f"data directory {data_dir} does not exist: generate data first "
                                 f"(`recsys data generate --out {data_dir}`)")
    if epochs is not None:
        cfg = cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update={"epochs": epochs})})
    if ranking_epochs is not None:
        cfg = cfg.model_copy(update={"ranking": cfg.ranking.model_copy(update={"epochs": ranking_epochs})})
    return cfg


def connect_cluster(cfg, cluster: ClusterOptions) -> None:
    """Pick the Ray cluster for the Ray Train jobs (see :mod:`recsys.training.cluster`) and say which."""
    from recsys.training.cluster import ClusterError, connect_for_training
    from recsys.training.ray_job import JobResources

    try:
        choice = connect_for_training(cluster.ray_address, JobResources.from_config(cfg).needs())
    except ClusterError as e:
        raise TrainingUsageError(str(e)) from e
    click.echo(f"[ray] {choice.message}")


def run_step(fn):
    """Run a training step turning user-fixable errors into exit code 2 and job failures into 1."""
    from recsys.platform.model_store import ModelStoreError
    from recsys.training.ranking.context import FeatureLeakError
    from recsys.training.ray_job import TrainingJobError
    from recsys.training.workflows import TrainingInputError

    try:
        return fn()
    except (TrainingInputError, ModelStoreError, FeatureLeakError) as e:
        raise TrainingUsageError(str(e)) from e
    except TrainingJobError as e:
        raise click.ClickException(str(e)) from e


@click.group()
def cli() -> None:
    """Train baselines, the two-tower retrieval model and the ranker (Ray Train jobs)."""


@cli.command("baselines")
@common_options
@click.option("--models", default=None, help="Comma-separated subset of popularity,item_knn,als,bpr,ease "
              "(default: all; EASE on a catalog above --ease-max-items is then skipped, by name it is an error).")
@click.option("--ease-max-items", type=click.IntRange(min=1), default=None,
              help="Largest catalog EASE accepts (default 12,000: its dense closed form needs ~20 bytes x n^2).")
@pass_config
def baselines(pcfg: PlatformConfig, data_dir, seed, num_workers, version, promote, split, cluster,
              models, ease_max_items) -> None:
    """Popularity, item-kNN, ALS, BPR and EASE, fitted on everything before the test cut (no Ray job)."""
    from recsys.platform.model_store import ModelStore
    from recsys.training.workflows import load_inputs, train_baselines

    cfg = make_config(pcfg, data_dir, seed, num_workers, split, cluster=cluster)
    if ease_max_items is not None:
        cfg = cfg.model_copy(update={"baselines": cfg.baselines.model_copy(update={"ease_max_items": ease_max_items})})
    names = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
    run_step(lambda: train_baselines(cfg, load_inputs(cfg), ModelStore(cfg.model_store_uri), version, promote,
                                     models=names))


@cli.command("sequential")
@common_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: SequentialConfig's (40).")
@pass_config
def sequential(pcfg: PlatformConfig, data_dir, seed, num_workers, version, promote, split, epochs, cluster) -> None:
    """SASRec sequential retriever as a Ray Train job; a promoted version is a serving candidate source."""
    from recsys.platform.model_store import ModelStore
    from recsys.training.sequential.config import SequentialConfig
    from recsys.training.sequential.workflow import train_sequential
    from recsys.training.workflows import load_inputs

    cfg = make_config(pcfg, data_dir, seed, num_workers, split, cluster=cluster)
    sc = SequentialConfig(**({"epochs": epochs} if epochs else {}))
    connect_cluster(cfg, cluster)
    run_step(lambda: train_sequential(cfg, load_inputs(cfg), ModelStore(cfg.model_store_uri), version, promote,
                                      sc=sc))


@cli.command("retrieval")
@common_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default 3.")
@click.option("--sparse-embeddings/--dense-embeddings", default=None,
              help="Sparse gradients + row-wise Adam for the id tables: a step costs O(batch), not O(table) "
                   "(default: dense, retrieval.sparse_embeddings).")
@pass_config
def retrieval(pcfg: PlatformConfig, data_dir, seed, num_workers, version, promote, split, epochs, sparse_embeddings,
              cluster) -> None:
    """Two-tower model (sampled softmax, in-batch negatives, logQ) as a Ray Train job."""
    from recsys.platform.model_store import ModelStore
    from recsys.training.workflows import load_inputs, train_retrieval

    cfg = make_config(pcfg, data_dir, seed, num_workers, split, epochs=epochs, cluster=cluster)
    if sparse_embeddings is not None:  # validated, not copied: the config refuses sparse tables with weight decay
        from pydantic import ValidationError

        try:
            rc = type(cfg.retrieval).model_validate({**cfg.retrieval.model_dump(),
                                                     "sparse_embeddings": sparse_embeddings})
        except ValidationError as e:
            raise TrainingUsageError(f"--sparse-embeddings: {e.errors()[0]['msg']}") from e
        cfg = cfg.model_copy(update={"retrieval": rc})
    connect_cluster(cfg, cluster)
    run_step(lambda: train_retrieval(cfg, load_inputs(cfg), ModelStore(cfg.model_store_uri), version, promote))


@cli.command("ranking")
@common_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default 2.")
@click.option("--retrieval-version", default=None, help="two_tower version for candidates (default: promoted).")
@click.option("--feature-source", type=click.Choice(["auto", "inline", "feast"]), default=None,
              help="auto = Feast when its offline tables are built from this dataset, else inline.")
@pass_config
def ranking(pcfg: PlatformConfig, data_dir, seed, num_workers, version, promote, split, epochs,
            retrieval_version, feature_source, cluster) -> None:
    """DeepFM ranker on two-tower candidates (hard + random negatives) as a Ray Train job."""
    from recsys.platform.model_store import ModelStore
    from recsys.training.workflows import load_inputs, train_ranking

    cfg = make_config(pcfg, data_dir, seed, num_workers, split, ranking_epochs=epochs, cluster=cluster)
    if feature_source:
        cfg = cfg.model_copy(update={"ranking": cfg.ranking.model_copy(update={"feature_source": feature_source})})
    connect_cluster(cfg, cluster)
    run_step(lambda: train_ranking(cfg, load_inputs(cfg), ModelStore(cfg.model_store_uri), version, promote,
                                   retrieval_version=retrieval_version))


@cli.command("all")
@common_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Two-tower epochs (default 3).")
@click.option("--ranking-epochs", type=click.IntRange(min=1), default=None, help="Ranker epochs (default 2).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Evaluation JSON (default: var/reports/evaluation-<time>.json next to data_dir).")
@click.option("--no-promote", is_flag=True, help="Do not promote (default: promote everything trained).")
@pass_config
def train_all_cmd(pcfg: PlatformConfig, data_dir, seed, num_workers, version, promote, split, epochs,
                  ranking_epochs, report_path, no_promote, cluster) -> None:
    """Baselines + two-tower + ranker, evaluate them on the test split, promote them."""
    from recsys.platform.model_store import ModelStore
    from recsys.training.workflows import train_all

    cfg = make_config(pcfg, data_dir, seed, num_workers, split, epochs=epochs, ranking_epochs=ranking_epochs,
                      cluster=cluster)
    connect_cluster(cfg, cluster)
    report, path, timings = run_step(lambda: train_all(cfg, ModelStore(cfg.model_store_uri), version,
                                                       promote=not no_promote,
                                                       report_path=Path(report_path) if report_path else None))
    click.echo("")
    click.echo(report.table())
    click.echo(f"report: {path}; timings: {timings}")
