"""Export a trained SASRec model in the two-tower store layout (docs/contracts.md).

``user_tower.pt`` is the TorchScript :class:`~recsys.training.sequential.model.SequenceEncoder`
(same call as the two-tower user tower: ``(user_index, history most-recent-first)``), next to
``item_embeddings.npy`` (the encoder's item table), ``item_ids.npy``, ``user_ids.npy``,
``faiss.index`` and ``config.json`` (``"model": "sasrec"``).  Serving's retrieval artifact loader
therefore reads a ``sasrec`` version unchanged, and :class:`TwoTowerRecommender` evaluates it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.training.base import Catalog
from recsys.training.sequential.config import SequentialConfig
from recsys.training.sequential.model import SasRecModel
from recsys.training.two_tower.artifacts import TwoTowerRecommender, write_two_tower


def sasrec_config(sc: SequentialConfig, catalog: Catalog) -> dict:
    return {"model": "sasrec", "embedding_dim": sc.embedding_dim, "history_length": sc.max_length,
            "n_items": catalog.n_items, "n_users": catalog.n_users, "blocks": sc.blocks, "heads": sc.heads,
            "user_index": "ignored (SASRec has no user id)",
            "history": "item_ids.npy rows, distinct, newest first (last interaction, then id), -1 pad"}


def item_embeddings(model: SasRecModel) -> np.ndarray:
    return model.encoder.item_vectors().detach().numpy().astype(np.float32)


def write_sasrec(directory: Path, model: SasRecModel, catalog: Catalog, sc: SequentialConfig,
                 hnsw_threshold: int = 50_000) -> None:
    model.eval()
    write_two_tower(Path(directory), model.encoder, item_embeddings(model), catalog, sasrec_config(sc, catalog),
                    hnsw_threshold)


def sasrec_recommender(model: SasRecModel, histories: np.ndarray) -> TwoTowerRecommender:
    """The in-memory model behind the Recommender interface (what the benchmark evaluates)."""
    model.eval()
    return TwoTowerRecommender(model.encoder, item_embeddings(model), histories)
