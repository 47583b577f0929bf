"""Ranker deployment: the TorchScript ranker scoring every candidate of a request in one forward pass.

The ingress builds the ``dense``/``sparse`` matrices (:mod:`recsys.serving.pipeline.scoring.inputs`, in the column
order of the version's ``feature_spec.json``) and sends them here; concurrent requests are
stacked by ``@serve.batch`` into one forward pass per version and split back.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from ray import serve

from recsys.platform.model_store import ModelStore
from recsys.serving.config import ServingConfig
from recsys.serving.models.artifacts import ArtifactError, RankerArtifacts, RankerSpec, load_ranker, resolve_version
from recsys.serving.models.rollout import RolloutSpec, VersionSet, replica_id


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

    async def replica_versions(self) -> dict:
        """Read-only, per replica: the version the last ``reconfigure`` made active and the versions loaded.

        Requests load whatever version they name, so only ``active`` shows that the rollout reached this replica.
        """
        return {"replica": replica_id(), "active": self.versions.active, "loaded": sorted(self.core._models)}

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


RANKER_MAX_BATCH = 32
RANKER_BATCH_WAIT_S = 0.0
"""Measured (docs/serving.md, "Ranker batch size"): one forward pass over 400 candidates costs ~0.02 ms
and 32 requests x 400 rows ~0.1 ms, so waiting for a batch to fill (the old 2 ms) only adds latency;
requests already queued are still stacked, up to 32."""


class BatchedRanker(Ranker):
    """What build_app deploys as "Ranker" (``stages.ranking.placement: deployment``): concurrent
    ``score`` calls share one forward pass.

    ``@serve.batch`` only works inside a Serve replica, hence the subclass.
    """

    @serve.batch(max_batch_size=RANKER_MAX_BATCH, batch_wait_timeout_s=RANKER_BATCH_WAIT_S)
    async def _score_one(self, requests: list[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
        return self.core.score_many(requests)
