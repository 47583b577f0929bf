"""Ranker deployment: the TorchScript ranker scoring every candidate of a request in one forward pass.

The ingress builds the ``dense``/``sparse`` matrices (:func:`build_ranker_inputs`, in the column
order of the version's ``feature_spec.json``) and sends them here; concurrent requests are
stacked by ``@serve.batch`` into one forward pass per version and split back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import mmh3
import numpy as np
from ray import serve

from recsys.platform.model_store import ModelStore
from recsys.serving.artifacts import ArtifactError, RankerArtifacts, RankerSpec, load_ranker, resolve_version
from recsys.serving.config import ServingConfig
from recsys.serving.rollout import RolloutSpec, VersionSet


def _sparse_value(value: Any, vocab_size: int, hashed: bool) -> int:
    if value is None or vocab_size <= 0:
        return 0
    if hashed:
        return mmh3.hash(str(value), 0, False) % vocab_size
    try:
        v = int(value)
    except (TypeError, ValueError):
        return 0
    return v if 0 <= v < vocab_size else 0


def build_ranker_inputs(
    spec: RankerSpec,
    *,
    user_id: int,
    item_ids: np.ndarray,
    retrieval_scores: np.ndarray,
    feature_names: Sequence[str] = (),
    item_features: np.ndarray | None = None,
    user_features: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(dense float32 [n, F_dense], sparse int64 [n, F_sparse]) in the spec's order.

    Dense columns come from the online features (by name), ``retrieval_score`` from retrieval,
    user scalars or request context; unknown names are 0. Normalisation uses the spec's
    mean/std. Sparse ``user_id``/``item_id`` come from the request, others from the context or
    user features; ``hash: true`` columns are murmur3-hashed into the vocabulary.
    """
    n = len(item_ids)
    col = {name: i for i, name in enumerate(feature_names)}
    user_features = user_features or {}
    context = context or {}
    dense = np.zeros((n, len(spec.dense)), dtype=np.float32)
    for j, name in enumerate(spec.dense):
        if name == "retrieval_score":
            dense[:, j] = retrieval_scores
        elif item_features is not None and name in col:
            dense[:, j] = item_features[:, col[name]]
        else:
            v = user_features.get(name, context.get(name))
            if isinstance(v, int | float) and not isinstance(v, bool):
                dense[:, j] = float(v)
        norm = spec.normalization.get(name)
        if norm:
            std = float(norm.get("std", 1.0)) or 1.0
            dense[:, j] = (dense[:, j] - float(norm.get("mean", 0.0))) / std
    sparse = np.zeros((n, len(spec.sparse)), dtype=np.int64)
    for j, s in enumerate(spec.sparse):
        name, vocab, hashed = s.get("name"), int(s.get("vocab_size", 1)), bool(s.get("hash", True))
        if name == "item_id":
            sparse[:, j] = [_sparse_value(int(i), vocab, hashed) for i in item_ids]
        else:
            v = user_id if name == "user_id" else context.get(name, user_features.get(name))
            sparse[:, j] = _sparse_value(v, vocab, hashed)
    return np.nan_to_num(dense, copy=False), sparse


class RankerCore:
    """Plain class (no Ray): versions of the ranker, each scored with one forward pass."""

    def __init__(self, cfg: ServingConfig):
        import torch

        torch.set_num_threads(1)
        self.cfg = cfg
        self.store = ModelStore(cfg.model_store_uri)
        self._models: dict[str, RankerArtifacts] = {}
        self._lock = threading.Lock()

    def load(self, version: str | None) -> str:
        mv = resolve_version(self.store, self.cfg.ranking_model, version)
        if mv.version not in self._models:
            with self._lock:
                if mv.version not in self._models:
                    self._models = {**self._models, mv.version: load_ranker(self.store, mv)}
        return mv.version

    def has_promoted(self) -> bool:
        try:
            resolve_version(self.store, self.cfg.ranking_model, None)
        except ArtifactError:
            return False
        return True

    def spec(self, version: str) -> RankerSpec:
        if version not in self._models:
            self.load(version)
        return self._models[version].spec

    def score(self, dense: np.ndarray, sparse: np.ndarray, version: str) -> np.ndarray:
        import torch

        if version not in self._models:
            self.load(version)
        model = self._models[version].model
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(dense, np.float32)),
                        torch.from_numpy(np.ascontiguousarray(sparse, np.int64)))
        return out.reshape(-1).float().numpy()

    def score_many(self, requests: list[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
        """Score several requests, one forward pass per distinct version (the @serve.batch body)."""
        out: list[np.ndarray | None] = [None] * len(requests)
        by_version: dict[str, list[int]] = {}
        for i, (_, _, v) in enumerate(requests):
            by_version.setdefault(v, []).append(i)
        for version, idx in by_version.items():
            dense = np.concatenate([requests[i][0] for i in idx])
            sparse = np.concatenate([requests[i][1] for i in idx])
            scores = self.score(dense, sparse, version) if len(dense) else np.zeros(0, np.float32)
            offset = 0
            for i in idx:
                n = len(requests[i][0])
                out[i] = scores[offset:offset + n]
                offset += n
        return out  # type: ignore[return-value]

    def retain(self, versions: list[str]) -> list[str]:
        with self._lock:
            self._models = {v: m for v, m in self._models.items() if v in versions}
        return sorted(self._models)


class Ranker:
    """Deployment class without batching (plain-class tests call it directly; see :class:`BatchedRanker`)."""

    def __init__(self, cfg: ServingConfig | dict):
        cfg = cfg if isinstance(cfg, ServingConfig) else ServingConfig(**cfg)
        self.core = RankerCore(cfg)
        self.versions = VersionSet()
        try:
            self.versions.active = self.core.load(cfg.ranking_version)
        except ArtifactError:
            if cfg.ranking_version is not None:  # a pinned version must exist
                raise
            # nothing promoted yet: start empty; the ingress ranks by retrieval score (degraded)
            # until a ranker is promoted and /admin/reload loads it

    async def reconfigure(self, user_config: dict) -> None:
        """Fleet-wide rollout (every replica): load the spec's ranker versions, keep the previous active one."""
        spec = RolloutSpec(**user_config)
        wanted = spec.ranking_versions()
        if wanted[0] is None and not self.core.has_promoted():
            return  # nothing promoted yet: stay empty, the ingress ranks by retrieval score
        await asyncio.to_thread(self.versions.apply, wanted, self.core.load, self.core.retain)

    async def load(self, version: str | None) -> str:
        return await asyncio.to_thread(self.core.load, version)

    async def score(self, dense: np.ndarray, sparse: np.ndarray, version: str) -> np.ndarray:
        if version not in self.core._models:
            await asyncio.to_thread(self.core.load, version)
        return await self._score_one((dense, sparse, version))

    async def _score_one(self, request: tuple[np.ndarray, np.ndarray, str]) -> np.ndarray:
        return self.core.score_many([request])[0]

    async def retain(self, versions: list[str]) -> list[str]:
        return self.core.retain(versions)


class BatchedRanker(Ranker):
    """What build_app deploys as "Ranker": concurrent ``score`` calls share one forward pass.

    ``@serve.batch`` only works inside a Serve replica, hence the subclass.
    """

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _score_one(self, requests: list[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
        return self.core.score_many(requests)
