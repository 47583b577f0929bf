"""SASRec candidate source: a user vector from the recent item sequence, then the nearest items.

The ``sasrec`` store version has the two-tower layout (``user_tower.pt`` is the TorchScript
sequence encoder with the user tower's call), so :func:`recsys.serving.models.artifacts.load_retrieval`
loads it unchanged.  The history is the one the request is served with: the online store's
``recent_item_ids`` (most recent first, distinct; real-time events pushed through ingest are in
it at once) or the request's own ``history``; the encoder reads it in that order.  Scoring is an
exact inner product over the catalog (a few ms for 10^4-10^5 items; the two-tower shards are the
place for a billion-item ANN).
"""

from __future__ import annotations

import numpy as np

from recsys.platform.ranking_features import recent_distinct
from recsys.serving.models.artifacts import RetrievalArtifacts


class SequentialCandidates:
    source = "sasrec"

    def __init__(self, art: RetrievalArtifacts):
        self.art = art
        self.item_embeddings = np.ascontiguousarray(art.item_embeddings, dtype=np.float32)

    def user_vector(self, history: list[int]) -> np.ndarray | None:
        """(D,) vector from the most-recent-first history; None when no history item is known to the model."""
        import torch

        L = self.art.history_length
        rows = self.art.item_index.lookup(recent_distinct(history, L)) if history else np.zeros(0, np.int64)
        rows = rows[rows >= 0]
        if len(rows) == 0:
            return None
        hist = np.full((1, L), -1, np.int64)
        hist[0, : len(rows)] = rows
        with torch.inference_mode():
            vec = self.art.user_tower(torch.tensor([-1], dtype=torch.long), torch.from_numpy(hist))
        return vec.reshape(-1).float().numpy()

    def from_history(self, history: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        vec = self.user_vector(history)
        if vec is None or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self.item_embeddings @ vec
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.art.item_ids[top].astype(np.int64), scores[top].astype(np.float32)

    candidates = from_history
