"""DeepFM-style ranker (Guo et al., IJCAI 2017), TorchScript-exportable.

Every input is a *field* with a k-dim embedding: each dense feature j contributes ``x_j * v_j``,
each sparse feature its embedding row.  logit = linear(first order) + FM pairwise interactions
0.5 * ((sum e)^2 - sum e^2) + MLP(concat e).  Preprocessing (signed log1p of count-like columns,
then standardisation with training mean/std) lives *inside* the module, so serving feeds the raw
feature matrix in ``feature_spec.json`` order and nothing else.
"""

from __future__ import annotations

import torch
from torch import nn


class DeepFmRanker(nn.Module):
    def __init__(self, n_dense: int, sparse_vocab: list[int], dim: int = 16, hidden: tuple[int, ...] = (128, 64),
                 log_columns: list[int] | None = None):
        super().__init__()
        self.n_dense = n_dense
        self.n_sparse = len(sparse_vocab)
        mask = torch.zeros(n_dense)
        for j in log_columns or []:
            mask[j] = 1.0
        self.register_buffer("log_mask", mask)
        self.register_buffer("mean", torch.zeros(n_dense))
        self.register_buffer("std", torch.ones(n_dense))
        self.register_buffer("vocab", torch.tensor(sparse_vocab, dtype=torch.long))
        offsets = [0]
        for v in sparse_vocab[:-1]:
            offsets.append(offsets[-1] + v)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))
        total = max(sum(sparse_vocab), 1)
        self.sparse_embedding = nn.Embedding(total, dim)
        self.sparse_linear = nn.Embedding(total, 1)
        self.dense_embedding = nn.Parameter(torch.randn(n_dense, dim) * 0.05)
        self.dense_linear = nn.Linear(n_dense, 1)
        layers: list[nn.Module] = []
        d_in = (n_dense + self.n_sparse) * dim
        for h in hidden:
            layers += [nn.Linear(d_in, h), nn.ReLU()]
            d_in = h
        layers.append(nn.Linear(d_in, 1))
        self.mlp = nn.Sequential(*layers)
        nn.init.normal_(self.sparse_embedding.weight, std=0.05)
        nn.init.zeros_(self.sparse_linear.weight)

    def preprocess(self, dense: torch.Tensor) -> torch.Tensor:
        logged = torch.sign(dense) * torch.log1p(dense.abs())
        x = torch.where(self.log_mask > 0, logged, dense)
        return (x - self.mean) / self.std

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(dense)
        idx = torch.remainder(sparse, self.vocab) + self.offsets
        e_sparse = self.sparse_embedding(idx)  # [B, S, k]
        e_dense = x.unsqueeze(-1) * self.dense_embedding  # [B, F, k]
        e = torch.cat([e_dense, e_sparse], dim=1)
        first = self.dense_linear(x).squeeze(-1) + self.sparse_linear(idx).sum(dim=(1, 2))
        s = e.sum(dim=1)
        fm = 0.5 * (s * s - (e * e).sum(dim=1)).sum(dim=1)
        deep = self.mlp(e.flatten(1)).squeeze(-1)
        return first + fm + deep


class MlpRanker(nn.Module):
    """Wide & deep scorer of one (user, candidate) row: linear(x) + MLP(x [, sparse embeddings]).

    The default listwise ranker: its inputs are mostly cross features (source scores, ranks,
    similarities), where a plain MLP learns the interactions that matter; the linear part lets
    it start from "trust the retrieval score" and stay there when nothing else helps.  Same
    preprocessing and ``forward(dense, sparse)`` signature as :class:`DeepFmRanker`, so serving
    treats both alike.
    """

    def __init__(self, n_dense: int, sparse_vocab: list[int], dim: int = 16, hidden: tuple[int, ...] = (64, 32),
                 log_columns: list[int] | None = None):
        super().__init__()
        self.n_dense = n_dense
        self.n_sparse = len(sparse_vocab)
        mask = torch.zeros(n_dense)
        for j in log_columns or []:
            mask[j] = 1.0
        self.register_buffer("log_mask", mask)
        self.register_buffer("mean", torch.zeros(n_dense))
        self.register_buffer("std", torch.ones(n_dense))
        self.register_buffer("vocab", torch.tensor(sparse_vocab if sparse_vocab else [1], dtype=torch.long))
        offsets = [0]
        for v in sparse_vocab[:-1]:
            offsets.append(offsets[-1] + v)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))
        self.sparse_embedding = nn.Embedding(max(sum(sparse_vocab), 1), dim)
        nn.init.normal_(self.sparse_embedding.weight, std=0.01)
        self.linear = nn.Linear(n_dense, 1)
        layers: list[nn.Module] = []
        d_in = n_dense + self.n_sparse * dim
        for h in hidden:
            layers += [nn.Linear(d_in, h), nn.ReLU()]
            d_in = h
        last = nn.Linear(d_in, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.mlp = nn.Sequential(*layers)

    def preprocess(self, dense: torch.Tensor) -> torch.Tensor:
        logged = torch.sign(dense) * torch.log1p(dense.abs())
        x = torch.where(self.log_mask > 0, logged, dense)
        return (x - self.mean) / self.std

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(dense)
        parts = [x]
        if self.n_sparse > 0:
            idx = torch.remainder(sparse, self.vocab) + self.offsets
            parts.append(self.sparse_embedding(idx).flatten(1))
        return self.linear(x).squeeze(-1) + self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
