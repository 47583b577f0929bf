"""Training settings: one pydantic object for the component, passed down explicitly.

Defaults are tuned so ``recsys train all`` on the default dataset (6k users x 4k items x ~1.1M
events) finishes in a few minutes on 2 CPU cores and the two-tower model and the two-tower ->
ranker pipeline beat popularity on Recall@20 / NDCG@20 (see docs/training.md for the numbers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.platform.data.history import HISTORY_LENGTH


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaselineConfig(_Strict):
    """Chosen on validation windows only (``benchmarks/quality.py --tune``; grids in docs/training.md)."""

    knn_neighbors: int = Field(50, ge=1, description="Neighbours kept per item (item-kNN)")
    knn_shrinkage: float = Field(100.0, ge=0, description="Cosine shrinkage x_i.x_j / (|x_i||x_j| + s)")
    # iALS defaults: chosen on both protocols' validation windows of ml-latest-small (docs/training.md
    # "What was tuned"; benchmarks/quality.py --tune --tune-models "als,als (edge)")
    als_factors: int = Field(128, ge=1)
    als_regularization: float = Field(10.0, ge=0)
    als_alpha: float = Field(0.3, ge=0, description="Confidence c = 1 + alpha * r (Hu, Koren, Volinsky 2008)")
    als_unobserved_weight: float = Field(3.0, gt=0, description="Weight of every pair's squared score (Rendle 2022)")
    als_init_std: float | None = Field(None, gt=0, description="Factor init std; None = 0.1 / sqrt(factors)")
    als_iterations: int = Field(16, ge=1)
    als_cg_steps: int = Field(3, ge=1, description="Conjugate-gradient steps per ALS half-iteration")
    ease_max_items: int = Field(12_000, ge=1, description="EASE refuses larger catalogs (dense n x n closed "
                                "form: ~20 bytes x n^2 of memory, O(n^3) time)")
    ease_regularization: float = Field(300.0, gt=0, description="EASE lambda (Steck 2019)")


class RetrievalConfig(_Strict):
    embedding_dim: int = Field(64, ge=4)
    history_length: int = Field(HISTORY_LENGTH, ge=1,
                                description="Newest distinct items fed to the user tower (platform/data/history.py)")
    text_buckets: int = Field(4096, ge=16, description="Hash buckets of the item description token bag")
    hidden_dim: int = Field(128, ge=8)
    temperature: float = Field(0.05, gt=0)
    logq_correction: bool = True
    batch_size: int = Field(1024, ge=8)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    sparse_embeddings: bool = Field(
        False, description="Sparse gradients for the user/item id tables + row-wise (lazy) Adam: a step costs "
                           "O(batch), not O(table); for catalogs where dense Adam dominates (README cost curves)")
    epochs: int = Field(3, ge=1)
    user_id_dropout: float = Field(0.2, ge=0, le=1, description="Chance a user id is replaced by 'unknown'")
    max_examples_per_epoch: int | None = Field(None, ge=1, description="Subsample positives per epoch (speed)")
    faiss_hnsw_threshold: int = Field(50_000, ge=1, description="Catalogs at least this big get HNSW, else flat IP")

    @model_validator(mode="after")
    def _sparse_needs_no_weight_decay(self) -> RetrievalConfig:
        if self.sparse_embeddings and self.weight_decay:
            raise ValueError("sparse_embeddings does not support weight_decay > 0 (SparseAdam has none)")
        return self


class RankingConfig(_Strict):
    """The ranker (docs/training.md "Ranker": what was tried on the validation window, and why these)."""

    model: Literal["mlp", "deepfm"] = Field("mlp", description="Scorer: wide & deep MLP, or DeepFM")
    loss: Literal["listwise", "bce"] = Field(
        "listwise", description="Softmax over each user's candidate list, or pointwise BCE (comparison only)")
    embedding_dim: int = Field(16, ge=2, description="Sparse-field embedding size")
    hidden_dims: tuple[int, ...] = (64, 32)
    candidates: int = Field(200, ge=10, description="Two-tower top-K the ranker reorders")
    knn_candidates: int = Field(50, ge=0, description="Item-kNN (from recent history) candidates merged in")
    popularity_candidates: int = Field(50, ge=0, description="Popularity candidates merged in")
    sasrec_candidates: int = Field(100, ge=0, description="SASRec candidates merged in when a sasrec version is "
                                   "given (serving's sequential_k)")
    content_candidates: int = Field(50, ge=0, description="Content-profile candidates merged in (serving's content_k; "
                                    "0 also drops the content score columns)")
    list_negatives: int = Field(0, ge=0, description="Non-positive candidates kept per list (0 = all; chosen on the "
                                "validation gate window, docs/training.md)")
    random_negatives: int = Field(0, ge=0, description="Unseen random catalog items appended per list")
    label_windows: int = Field(3, ge=2, description="Validation label windows; the last one is the gate window")
    sparse_features: tuple[str, ...] = Field(
        (), description="Raw-id fields (item_id, user_id); none by default: an item-id field overfits the "
        "label windows (docs/training.md)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    max_users: int = Field(6000, ge=1, description="Label-window users sampled for examples (over all windows)")
    positive_events: tuple[str, ...] = Field(
        ("view", "click", "purchase"),
        description="Label-window events that make a positive (plus ratings >= positive_min_rating); test "
        "targets are any new interaction")
    positive_min_rating: float = 4.0
    batch_size: int = Field(64, ge=1, description="Lists (users) per step")
    learning_rate: float = Field(3e-3, gt=0)
    epochs: int = Field(8, ge=1)
    feature_source: Literal["auto", "inline", "feast"] = "inline"
    gate_metrics: tuple[str, ...] = Field(
        ("recall@20", "ndcg@20"), description="Promotion gate: the pipeline must beat retrieval order on each")
    gate_confidence: float = Field(0.95, gt=0, lt=1, description="Paired-bootstrap CI level of the gate")


class EvaluationConfig(_Strict):
    k: tuple[int, ...] = (10, 20)
    bootstrap_samples: int = Field(500, ge=10)
    confidence: float = Field(0.95, gt=0, lt=1)
    max_users: int | None = Field(None, ge=1, description="Evaluate a seeded sample of users (speed)")


class FailOnce(_Strict):
    """Failure drill: one worker process (``rank``, default the last) exits once at ``epoch`` (1-based);
    ``marker`` records it.

    Exercises ``FailureConfig`` + resume from the latest checkpoint on a real cluster (tests, chaos runs).
    A ``rank`` the run does not have never fires, so a test naming rank 1 also checks that 2 workers ran.
    """

    epoch: int = Field(..., ge=1)
    marker: str = Field(..., description="File written before the crash; once it exists nothing crashes")
    rank: int | None = Field(None, ge=0, description="The worker rank that exits (None: the last rank)")


class TrainingConfig(_Strict):
    """Everything the training CLI and jobs need; the platform config supplies paths and the seed."""

    data_dir: Path = Path("var/data")
    model_store_uri: str = "var/models"
    feature_repo_dir: Path = Path("var/features")
    redis_url: str = "redis://127.0.0.1:6379/0"
    storage_path: str = Field(
        "var/ray_results",
        description="Ray Train checkpoints and run state: a local path, or a URI every node can reach (s3://, "
        "gs://, file:// on a shared mount); the driver reads the best checkpoint back from it")
    dataset_uri: str | None = Field(
        None,
        description="Where the Ray Train jobs write their training rows as partitioned parquet that the workers "
        "stream with Ray Data (a local path, or a URI every node can reach: s3://, gs://, file://); "
        "None: <storage_path>/datasets")
    seed: int = 42
    split: Literal["global_time", "leave_last_out"] = "global_time"
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel)")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per worker (fractions allowed)")
    use_gpu: bool = Field(False, description="One GPU per worker; tensors and models on the worker's device")
    max_failures: int = Field(2, ge=-1, description="Worker-group restarts from the latest checkpoint (-1: no "
                              "limit); each restart resumes at the epoch after the last checkpoint")
    fail_once: FailOnce | None = Field(None, description="Failure drill (tests): crash one worker once")
    torch_threads: int = Field(1, ge=1, description="Intra-op threads per worker (1: more are slow on busy cores)")
    baselines: BaselineConfig = BaselineConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    ranking: RankingConfig = RankingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("storage_path", "dataset_uri", mode="before")
    @classmethod
    def _storage_as_str(cls, v):
        """Keep URIs verbatim: ``Path("s3://b/x")`` would collapse the ``//`` into ``s3:/b/x``."""
        return os.fspath(v) if isinstance(v, os.PathLike) else v

    def datasets_uri(self) -> str:
        """The training tables' base URI (:mod:`recsys.training.tables`)."""
        return self.dataset_uri or self.storage_path.rstrip("/") + "/datasets"

    @classmethod
    def from_platform(cls, platform_cfg, **overrides) -> TrainingConfig:
        """Derive from the shared :class:`recsys.platform.config.PlatformConfig`."""
        base = {
            "data_dir": platform_cfg.data_dir,
            "model_store_uri": platform_cfg.model_store_uri,
            "feature_repo_dir": platform_cfg.feature_repo_dir,
            "redis_url": platform_cfg.redis_url,
            "seed": platform_cfg.seed,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)
