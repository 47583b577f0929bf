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


@pytest.fixture(scope="module")
def small_split(small_dataset):
    return split_events(small_dataset.events), Catalog.from_dataset(small_dataset)
