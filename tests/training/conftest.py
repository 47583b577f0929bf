"""Training-test helpers: a tiny TrainingConfig and the small dataset's split + catalog."""

from __future__ import annotations

import pytest

from recsys.platform.data.split import split_events
from recsys.training.base import Catalog
from recsys.training.config import TrainingConfig


def small_config(tmp_path, **over) -> TrainingConfig:
    cfg = TrainingConfig(
        storage_path=tmp_path / "ray_results",
        seed=over.pop("seed", 7),
        retrieval={"embedding_dim": 16, "hidden_dim": 32, "history_length": 10, "batch_size": 256, "epochs": 1,
                   "text_buckets": 256, **over.pop("retrieval", {})},
        ranking={"embedding_dim": 4, "hidden_dims": (16,), "candidates": 30, "list_negatives": 20,
                 "knn_candidates": 10, "popularity_candidates": 10, "random_negatives": 3, "epochs": 1,
                 "batch_size": 16, "feature_source": "inline",
                 "max_users": 200, "sparse_features": ("item_id",), **over.pop("ranking", {})},
        evaluation={"bootstrap_samples": 20},
        **over,
    )
    return cfg


def split_and_catalog(dataset) -> tuple:
    """The dataset's time split and its catalog (what the training jobs take)."""
    return split_events(dataset.events), Catalog.from_dataset(dataset)


@pytest.fixture(scope="module")
def small_split(small_dataset):
    return split_and_catalog(small_dataset)


def scale_config(tmp_path, workers: int, **over) -> TrainingConfig:
    """:func:`small_config` with ``workers`` Ray Train workers of half a CPU and 2 epochs (the scale-out tests)."""
    return small_config(tmp_path, num_workers=workers, cpus_per_worker=0.5,
                        retrieval={"epochs": 2, **over.pop("retrieval", {})},
                        ranking={"epochs": 2, **over.pop("ranking", {})}, **over)


@pytest.fixture(scope="package")
def two_tower_runs(ray_cluster, small_dataset, tmp_path_factory):
    """The two-tower trained by 1 and by 2 workers (:func:`scale_config`), once for the training tests.

    Why shared: each run takes 35-50 s on the 2-core box, and both the scale-out tests and the sparse-embedding
    test compare against the same default (dense) runs.
    """
    from recsys.training.two_tower.job import train_two_tower

    split, cat = split_and_catalog(small_dataset)
    tmp = tmp_path_factory.mktemp("scale_tt")
    return {w: train_two_tower(scale_config(tmp, w), split.train, split.validation, cat, small_dataset.items)
            for w in (1, 2)}
