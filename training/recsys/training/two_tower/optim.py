"""The two-tower's optimizer: Adam, or Adam for dense weights + SparseAdam for sparse-gradient id tables.

Why: with dense ``nn.Embedding`` tables Adam reads and writes every row of the user, item and
history tables on every step, so a step costs O(table) and an epoch O(rows x table): the README's
cost curves measured 53 -> 73 -> 131 µs per training row at 1x / 4x / 16x the synthetic data. With
``RetrievalConfig.sparse_embeddings`` the tables produce sparse gradients and ``torch.optim.SparseAdam``
updates only the rows in the batch ("lazy" Adam: a row's moments move only when the row is used,
as TF's LazyAdam and TorchRec's row-wise optimizers do), so a step costs O(batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TwoTowerOptimizer:
    """One object with the ``torch.optim.Optimizer`` surface the training loop and checkpoints use."""

    def __init__(self, model: nn.Module, learning_rate: float, weight_decay: float):
        """The model's sparse-gradient tables (``nn.Embedding(sparse=True)``) go to SparseAdam, the rest to Adam."""
        sparse_params = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
        ids = {id(p) for p in sparse_params}
        dense_params = [p for p in model.parameters() if id(p) not in ids]
        if sparse_params and weight_decay:
            raise ValueError("retrieval.sparse_embeddings does not support weight_decay > 0 (SparseAdam has none): "
                             "set retrieval.weight_decay to 0 or turn sparse_embeddings off")
        self.dense = torch.optim.Adam(dense_params, lr=learning_rate, weight_decay=weight_decay)
        self.sparse = torch.optim.SparseAdam(sparse_params, lr=learning_rate) if sparse_params else None

    def zero_grad(self) -> None:
        self.dense.zero_grad()
        if self.sparse is not None:
            self.sparse.zero_grad()

    def step(self) -> None:
        self.dense.step()
        if self.sparse is not None:
            self.sparse.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict() if self.sparse else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "dense" not in state:  # a checkpoint of the plain-Adam optimizer (before this class)
            self.dense.load_state_dict(state)
            return
        self.dense.load_state_dict(state["dense"])
        if self.sparse is not None and state.get("sparse") is not None:
            self.sparse.load_state_dict(state["sparse"])
