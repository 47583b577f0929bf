"""SASRec (Kang & McAuley, ICDM 2018) in torch: item + positional embeddings, pre-LN causal self-attention.

Inside the model a sequence is *left-padded, oldest first*: position L-1 holds the most recent item and
its output is the user vector; scores are inner products with the (shared) item embedding table.

:class:`SequenceEncoder` is the exported, self-contained part.  It answers the same call as the
two-tower user tower, ``forward(user_index, history)`` with ``history`` = item indices *most recent
first*, ``-1`` padded (docs/contracts.md), so serving feeds it exactly what it feeds the user tower
and the store layout is the two-tower one.  ``user_index`` is ignored (SASRec has no user id).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = (x + self.drop(a)) * keep
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x * keep


class SequenceEncoder(nn.Module):
    def __init__(self, n_items: int, max_length: int, dim: int, heads: int, blocks: int, dropout: float):
        super().__init__()
        self.n_items, self.max_length, self.heads = n_items, max_length, heads
        self.scale = float(dim) ** 0.5
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=n_items)  # last row: padding
        self.position_embedding = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList([_Block(dim, heads, dropout) for _ in range(blocks)])
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.item_embedding.weight, std=0.05)
        nn.init.normal_(self.position_embedding.weight, std=0.05)
        with torch.no_grad():
            self.item_embedding.weight[n_items].zero_()

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L, D] outputs for left-padded, oldest-first ``seq`` (``n_items`` = padding)."""
        b, length = seq.shape
        real = seq < self.n_items
        keep = real.unsqueeze(-1).float()
        pos = torch.arange(length, device=seq.device).unsqueeze(0).expand(b, length)
        x = self.item_embedding(seq) * self.scale + self.position_embedding(pos)
        x = self.drop(x) * keep
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), diagonal=1)
        mask = causal.unsqueeze(0) | (~real).unsqueeze(1)  # [B, L, L] True = may not attend
        eye = torch.eye(length, dtype=torch.bool, device=seq.device).unsqueeze(0)
        mask = (mask & ~eye).repeat_interleave(self.heads, dim=0)  # a position always sees itself: no NaN rows
        for block in self.blocks:
            x = block(x, mask, keep)
        return self.ln(x)

    def to_sequence(self, history: torch.Tensor) -> torch.Tensor:
        """Most-recent-first, -1 padded history -> left-padded oldest-first [B, max_length] sequence."""
        h = history[:, : self.max_length]
        if h.shape[1] < self.max_length:
            h = F.pad(h, (0, self.max_length - h.shape[1]), value=-1.0)
        h = torch.where((h >= 0) & (h < self.n_items), h, torch.full_like(h, self.n_items))
        return torch.flip(h, dims=[1])

    def forward(self, user_index: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """User vector [B, D] from the history (most recent first); ``user_index`` is unused."""
        return self.encode(self.to_sequence(history))[:, -1]

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight[: self.n_items]


class SasRecModel(nn.Module):
    """The encoder plus the training loss (``forward`` returns it so DDP syncs gradients)."""

    def __init__(self, n_items: int, max_length: int, dim: int = 64, heads: int = 2, blocks: int = 2,
                 dropout: float = 0.2):
        super().__init__()
        self.encoder = SequenceEncoder(n_items, max_length, dim, heads, blocks, dropout)

    def forward(self, seq: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None,
                log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the next item at every real position.

        ``seq``/``targets`` [B, L] (targets = seq shifted by one, ``n_items`` where there is none). Without
        ``negatives``: full softmax over the catalog (Klenitskiy & Vasilev 2023). With ``negatives`` [N]
        (drawn by popularity) and ``log_q`` [n_items]: sampled softmax, every logit minus its item's log q
        (Yi et al. 2019), negatives equal to a position's target masked (accidental hits).
        """
        h = self.encoder.encode(seq)  # [B, L, D]
        n = self.encoder.n_items
        valid = targets < n
        hv, tv = h[valid], targets[valid]  # [P, D], [P]
        if negatives is None:
            return F.cross_entropy(hv @ self.encoder.item_vectors().T, tv)
        emb = self.encoder.item_embedding
        pos = (hv * emb(tv)).sum(-1, keepdim=True) - log_q[tv].unsqueeze(1)
        neg = hv @ emb(negatives).T - log_q[negatives].unsqueeze(0)
        neg = neg.masked_fill(negatives.unsqueeze(0) == tv.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(tv), dtype=torch.long, device=seq.device))
