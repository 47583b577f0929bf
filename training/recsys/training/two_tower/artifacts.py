"""Two-tower artifacts in the model store (docs/contracts.md) and the Recommender that reads them.

The exported user tower is TorchScript (``torch.jit.script``): torch 2.13 still compiles, saves and
loads it (with a DeprecationWarning that we silence here), and ``torch.jit.load`` needs no training
code, which is what serving relies on.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import scipy.sparse as sp
import torch

from recsys.training.base import Catalog, top_n
from recsys.training.two_tower.model import UserTower

USER_TOWER_FILE = "user_tower.pt"


@contextmanager
def _quiet_jit():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def script_user_tower(tower: UserTower) -> torch.jit.ScriptModule:
    with _quiet_jit():
        return torch.jit.script(tower.eval())


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on CPU in eval mode, without torch 2.13's deprecation warnings."""
    with _quiet_jit():
        return torch.jit.load(str(path), map_location="cpu").eval()


def build_faiss_index(embeddings: np.ndarray, hnsw_threshold: int) -> faiss.Index:
    """Exact inner product for small catalogs, HNSW (inner product) for large ones."""
    d = embeddings.shape[1]
    if len(embeddings) < hnsw_threshold:
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def write_two_tower(
    directory: Path,
    user_tower: UserTower,
    item_embeddings: np.ndarray,
    catalog: Catalog,
    config: dict,
    hnsw_threshold: int,
) -> None:
    """Write every file of a ``two_tower`` version into ``directory`` (a store staging dir)."""
    directory = Path(directory)
    emb = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    np.save(directory / "item_embeddings.npy", emb)
    np.save(directory / "item_ids.npy", catalog.items.ids.astype(np.int64))
    np.save(directory / "user_ids.npy", catalog.users.ids.astype(np.int64))
    with _quiet_jit():
        torch.jit.save(script_user_tower(user_tower), str(directory / USER_TOWER_FILE))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    faiss.write_index(build_faiss_index(emb, hnsw_threshold), str(directory / "faiss.index"))


class TwoTowerRecommender:
    """Scores all items by inner product with the user tower's output.

    ``histories`` [n_users, L] (item indices, most recent first, -1 padded) is the user tower's
    input; :meth:`fit` replaces it from an interaction matrix (highest-confidence items first) for
    callers that only have the matrix.
    """

    def __init__(self, user_tower, item_embeddings: np.ndarray, histories: np.ndarray | None = None,
                 history_length: int = 50, batch_size: int = 2048):
        self.user_tower = user_tower
        self.item_embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
        self.history_length = history_length if histories is None else histories.shape[1]
        self.histories = histories
        self.batch_size = batch_size

    @classmethod
    def load(cls, directory: str | Path, histories: np.ndarray | None = None) -> TwoTowerRecommender:
        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        return cls(load_torchscript(directory / USER_TOWER_FILE), np.load(directory / "item_embeddings.npy"),
                   histories=histories, history_length=int(cfg["history_length"]))

    def fit(self, interactions: sp.csr_matrix) -> TwoTowerRecommender:
        m = interactions.tocsr()
        hist = np.full((m.shape[0], self.history_length), -1, dtype=np.int64)
        for u in range(m.shape[0]):
            cols, vals = m.indices[m.indptr[u]:m.indptr[u + 1]], m.data[m.indptr[u]:m.indptr[u + 1]]
            top = cols[np.argsort(-vals, kind="stable")][: self.history_length]
            hist[u, : len(top)] = top
        self.histories = hist
        return self

    @torch.no_grad()
    def user_embeddings(self, user_indices: np.ndarray) -> np.ndarray:
        users = np.asarray(user_indices, dtype=np.int64)
        out = []
        for s in range(0, len(users), self.batch_size):
            u = users[s:s + self.batch_size]
            h = self.histories[u] if self.histories is not None else np.full((len(u), 1), -1, np.int64)
            out.append(self.user_tower(torch.from_numpy(u), torch.from_numpy(np.ascontiguousarray(h))).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.item_embeddings.shape[1]), np.float32)

    def scores(self, user_indices: np.ndarray) -> np.ndarray:
        return self.user_embeddings(user_indices) @ self.item_embeddings.T

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        return top_n(self.scores(users), n, user_items if filter_already_liked else None, users)

    def similar_items(self, item_indices, n: int = 20):
        items = np.asarray(item_indices, dtype=np.int64)
        s = self.item_embeddings[items] @ self.item_embeddings.T
        s[np.arange(len(items)), items] = -np.inf
        return top_n(s, n)
