"""Settings of the sequential (SASRec) retriever; its own object so the shared TrainingConfig stays small.

Defaults were chosen on the *validation* window of ml-latest-small and the synthetic dataset
(``benchmarks/quality.py --tune``; docs/training.md "Quality" lists the grid and the numbers).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SequentialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_length: int = Field(50, ge=2, description="L: the most recent distinct items the encoder reads")
    embedding_dim: int = Field(64, ge=8)
    heads: int = Field(2, ge=1)
    blocks: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    negatives: int = Field(1024, ge=1, description="Uniform negatives shared by a batch (sampled softmax)")
    batch_size: int = Field(128, ge=2, description="Training windows per step")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(40, ge=1, description="Validation Recall@20 on ml-latest-small still rose at 40 (docs)")
    max_windows_per_user: int = Field(4, ge=1, description="Windows of L items taken from the end of each sequence")
    max_windows_per_epoch: int | None = Field(None, ge=1, description="Subsample windows per epoch (speed)")
