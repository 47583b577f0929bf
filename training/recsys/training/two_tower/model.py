"""Two-tower retrieval model (torch).

* item tower: item-id embedding + genre multi-hot projection + mean of hashed description-token
  embeddings -> MLP -> L2-normalised D-vector;
* user tower: user-id embedding (row ``n_users`` = unknown user) + masked mean of history item
  embeddings + projection of the history's genre distribution -> MLP -> L2-normalised D-vector.

The user tower is a self-contained module (it carries the item genre table as a buffer) so it
can be TorchScript-compiled and served without training code: ``forward(user_index, history)``
with ``user_index = -1`` for unknown users and ``history`` padded with ``-1`` (docs/contracts.md).

Loss: sampled softmax over in-batch negatives with logQ correction (Yi et al., RecSys 2019):
logits_bj = u_b . v_j / temperature - log q_j, where q_j is the item's sampling probability
(its share of training positives); accidental hits (same item twice in a batch) are masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class ItemTower(nn.Module):
    def __init__(self, n_items: int, item_genres: torch.Tensor, item_tokens: torch.Tensor, text_buckets: int,
                 dim: int, hidden: int, sparse: bool = False):
        super().__init__()
        self.id_embedding = nn.Embedding(n_items, dim, sparse=sparse)
        self.genre_projection = nn.Linear(item_genres.shape[1], dim, bias=False)
        self.text_embedding = nn.EmbeddingBag(text_buckets + 1, dim, mode="mean", padding_idx=0)
        self.mlp = _mlp(3 * dim, hidden, dim)
        genre_norm = item_genres / item_genres.sum(dim=1, keepdim=True).clamp(min=1.0)
        self.register_buffer("item_genres", genre_norm.float(), persistent=True)
        self.register_buffer("item_tokens", item_tokens.long(), persistent=True)
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        nn.init.normal_(self.text_embedding.weight, std=0.05)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        parts = [
            self.id_embedding(items),
            self.genre_projection(self.item_genres[items]),
            self.text_embedding(self.item_tokens[items]),
        ]
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=-1)


class UserTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, item_genres: torch.Tensor, dim: int, hidden: int,
                 sparse: bool = False):
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.user_embedding = nn.Embedding(n_users + 1, dim, sparse=sparse)  # last row: unknown user
        self.history_embedding = nn.Embedding(n_items + 1, dim, padding_idx=n_items, sparse=sparse)  # last: padding
        self.genre_projection = nn.Linear(item_genres.shape[1], dim, bias=False)
        self.mlp = _mlp(3 * dim, hidden, dim)
        genre_norm = item_genres / item_genres.sum(dim=1, keepdim=True).clamp(min=1.0)
        self.register_buffer("item_genres", genre_norm.float(), persistent=True)
        nn.init.normal_(self.user_embedding.weight, std=0.05)
        nn.init.normal_(self.history_embedding.weight, std=0.05)
        with torch.no_grad():
            self.history_embedding.weight[n_items].zero_()

    def forward(self, user_index: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        users = torch.where((user_index >= 0) & (user_index < self.n_users), user_index,
                            torch.full_like(user_index, self.n_users))
        mask = (history >= 0) & (history < self.n_items)
        hist = torch.where(mask, history, torch.full_like(history, self.n_items))
        maskf = mask.float().unsqueeze(-1)
        count = maskf.sum(dim=1).clamp(min=1.0)
        hist_mean = (self.history_embedding(hist) * maskf).sum(dim=1) / count
        genre_mean = (self.item_genres[hist.clamp(max=self.n_items - 1)] * maskf).sum(dim=1) / count
        parts = [self.user_embedding(users), hist_mean, self.genre_projection(genre_mean)]
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=-1)


class TwoTowerModel(nn.Module):
    """Both towers plus the training loss (``forward`` returns the loss so DDP syncs gradients)."""

    def __init__(self, n_users: int, n_items: int, item_genres: torch.Tensor, item_tokens: torch.Tensor,
                 text_buckets: int, dim: int = 64, hidden: int = 128, temperature: float = 0.05,
                 sparse_embeddings: bool = False):
        """``sparse_embeddings``: the id tables (users, items, history items) get sparse gradients, so an
        optimizer step touches only the rows in the batch (see :mod:`.optim`), not whole tables."""
        super().__init__()
        self.user_tower = UserTower(n_users, n_items, item_genres, dim, hidden, sparse=sparse_embeddings)
        self.item_tower = ItemTower(n_items, item_genres, item_tokens, text_buckets, dim, hidden,
                                    sparse=sparse_embeddings)
        self.temperature = temperature

    def forward(self, users: torch.Tensor, history: torch.Tensor, items: torch.Tensor,
                log_q: torch.Tensor | None = None) -> torch.Tensor:
        u = self.user_tower(users, history)
        v = self.item_tower(items)
        logits = u @ v.T / self.temperature
        if log_q is not None:
            logits = logits - log_q.unsqueeze(0)
        same = items.unsqueeze(0) == items.unsqueeze(1)
        accidental = same & ~torch.eye(len(items), dtype=torch.bool, device=items.device)
        logits = logits.masked_fill(accidental, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(items), device=items.device))

    @torch.no_grad()
    def item_embeddings(self, n_items: int, batch_size: int = 8192) -> torch.Tensor:
        out = []
        for s in range(0, n_items, batch_size):
            out.append(self.item_tower(torch.arange(s, min(s + batch_size, n_items))))
        return torch.cat(out)
