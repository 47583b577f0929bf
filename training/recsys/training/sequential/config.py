"""Settings of the sequential (SASRec) retriever; its own object so the shared TrainingConfig stays small.

The recipe follows Klenitskiy & Vasilev (RecSys 2023, "Turning Dross Into Gold Loss: is BERT4Rec really
better than SASRec?"): cross-entropy over the whole catalog at every position, trained until validation
NDCG@20 stops improving. Architecture sizes are the SASRec paper's (Kang & McAuley 2018). No value here
was picked on a test window (docs/training.md "SASRec").
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from recsys.platform.data.history import HISTORY_LENGTH

FULL_SOFTMAX_MAX_ITEMS = 200_000
"""Catalogs up to this size train with the full softmax ([positions x items] logits fit in memory on a CPU
at batch 128 x L 50 up to here); above it, sampled softmax with logQ correction (``negatives`` items drawn
by popularity, their log-probability subtracted from the logits: Yi et al. 2019)."""


class SequentialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(HISTORY_LENGTH, ge=2,
                            description="L: the newest distinct items the encoder reads (200 for ML-1M-like data)")
    embedding_dim: int = Field(64, ge=8)
    heads: int = Field(2, ge=1)
    blocks: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    full_softmax_max_items: int = Field(FULL_SOFTMAX_MAX_ITEMS, ge=1,
                                        description="Full softmax up to this catalog size, sampled + logQ above")
    negatives: int = Field(4096, ge=1, description="Sampled softmax only: popularity-drawn negatives per batch")
    batch_size: int = Field(64, ge=2, description="Windows per step (64: ~30 steps per epoch on ml-latest-small)")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(200, ge=1, description="Upper bound; early stopping on validation NDCG@20 ends sooner")
    patience: int = Field(10, ge=1, description="Stop after this many epochs without a better validation NDCG@20")
    max_windows_per_user: int | None = Field(
        None, ge=1, description="Windows of L items cut from the end of each sequence (None: the whole sequence, "
                                "every interaction a target once)")
    max_windows_per_epoch: int | None = Field(None, ge=1, description="Subsample windows per epoch (speed)")
