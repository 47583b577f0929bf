"""``train_sequential``: train SASRec on the train window and publish a ``sasrec`` store version.

Like the two-tower step: fit on train only (validation measures it per epoch), export in the
two-tower layout, re-load the TorchScript file and compare it with the live encoder before publishing.
"""

from __future__ import annotations

import numpy as np

from recsys.platform.model_store import ModelStore, ModelVersion
from recsys.training.base import user_histories
from recsys.training.config import TrainingConfig
from recsys.training.sequential.artifacts import sasrec_recommender, write_sasrec
from recsys.training.sequential.config import SequentialConfig
from recsys.training.sequential.job import TrainedSasRec, train_sasrec
from recsys.training.two_tower.artifacts import TwoTowerRecommender

SEQUENTIAL_NAME = "sasrec"


def fit_sasrec(cfg: TrainingConfig, inputs, sc: SequentialConfig) -> TrainedSasRec:
    return train_sasrec(sc, inputs.split.train, inputs.split.validation, inputs.catalog, seed=cfg.seed,
                        num_workers=cfg.num_workers, cpus_per_worker=cfg.cpus_per_worker,
                        torch_threads=cfg.torch_threads, storage_path=str(cfg.storage_path), use_gpu=cfg.use_gpu,
                        dataset_uri=cfg.datasets_uri())


def train_sequential(cfg: TrainingConfig, inputs, store: ModelStore, version: str | None = None,
                     promote: bool = False, sc: SequentialConfig | None = None,
                     progress: bool = True) -> ModelVersion:
    sc = sc or SequentialConfig()
    trained = fit_sasrec(cfg, inputs, sc)
    best = trained.best_metrics or {}  # the exported epoch's numbers, not the last epoch's
    metrics = {k: v for k, v in best.items() if k in ("loss", "val_recall@20", "val_ndcg@20", "epoch") and v == v}
    params = {**sc.model_dump(), "seed": cfg.seed, "split": cfg.split, "fit_on": "train",
              "best_epoch": trained.best_epoch,
              "num_workers": cfg.num_workers, "train_seconds": round(trained.seconds, 3), "history": trained.history}
    version = version or ModelStore.new_version_id()
    with store.write_version(SEQUENTIAL_NAME, version, kind="retrieval", metrics=metrics, params=params,
                             data_hash=inputs.dataset.content_hash()) as d:
        write_sasrec(d, trained.model, inputs.catalog, sc)
    mv = store.get(SEQUENTIAL_NAME, version)
    probe = np.arange(min(8, inputs.catalog.n_users))
    hist = user_histories(inputs.split.train, inputs.catalog, sc.max_length)[probe]
    loaded = TwoTowerRecommender.load(store.local_path(mv), histories=hist)
    live = sasrec_recommender(trained.model, hist)
    if not np.allclose(live.user_embeddings(probe), loaded.user_embeddings(probe), atol=1e-4):
        raise RuntimeError("exported sasrec user_tower.pt does not reproduce the trained encoder")
    if promote:
        store.promote(SEQUENTIAL_NAME, mv.version)
    if progress:
        print(f"[sasrec] trained in {trained.seconds:.1f}s -> {SEQUENTIAL_NAME}/{mv.version}"
              f"{' (promoted)' if promote else ''}", flush=True)
    return mv
