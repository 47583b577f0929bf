"""Retrieval shard deployment: one slice of the catalog in a FAISS index, several versions at once.

Shard ``s`` of ``S`` owns catalog rows ``row % S == s`` of a `two_tower` version. The ingress
computes the user embedding once and scatters it to every shard (``handle.search.remote``),
then merges the per-shard top-K (:func:`recsys.serving.pipeline.candidates.ann.merge_topk`).

Versions: each request names the retrieval version it wants. A shard builds the index for a
version the first time it is asked (or when told to preload it, which the ingress does before
swapping to a newly promoted version), keeps the old one serving meanwhile, and drops versions
the ingress no longer uses — that is the hot swap without dropped requests.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from recsys.platform.model_store import ModelStore
from recsys.serving.config import ServingConfig
from recsys.serving.models.artifacts import load_retrieval, resolve_version
from recsys.serving.models.rollout import RolloutSpec, VersionSet, replica_id
from recsys.serving.pipeline.candidates.ann import AnnParams, FaissShard, shard_rows


def ann_params(cfg: ServingConfig) -> AnnParams:
    return AnnParams(
        kind=cfg.ann,
        flat_max_items=cfg.flat_max_items,
        hnsw_max_items=cfg.hnsw_max_items,
        hnsw_m=cfg.hnsw_m,
        hnsw_ef_search=cfg.hnsw_ef_search,
        ivf_nprobe=cfg.ivf_nprobe,
        ivf_nlist=cfg.ivf_nlist,
    )


class RetrievalShardCore:
    """Plain class (no Ray): load/build per version, search, forget old versions."""

    def __init__(self, cfg: ServingConfig, shard_id: int, num_shards: int):
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id {shard_id} outside [0, {num_shards})")
        self.cfg = cfg
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.store = ModelStore(cfg.model_store_uri)
        self.params = ann_params(cfg)
        self._shards: dict[str, FaissShard] = {}
        self._lock = threading.Lock()
        self.build_seconds: dict[str, float] = {}

    def load(self, version: str | None) -> str:
        """Make ``version`` (None = promoted) searchable; returns the concrete version id."""
        mv = resolve_version(self.store, self.cfg.retrieval_model, version)
        if mv.version in self._shards:
            return mv.version
        with self._lock:  # one build per version even if several requests race for it
            if mv.version in self._shards:
                return mv.version
            t0 = time.perf_counter()
            art = load_retrieval(self.store, mv, with_tower=False, mmap=True)
            rows = shard_rows(len(art.item_ids), self.shard_id, self.num_shards)
            shard = FaissShard(np.asarray(art.item_embeddings[rows], dtype=np.float32), rows, self.params)
            self._shards = {**self._shards, mv.version: shard}  # copy-on-write: readers never see a half dict
            self.build_seconds[mv.version] = time.perf_counter() - t0
        return mv.version

    def search(self, queries: np.ndarray, k: int, version: str) -> tuple[np.ndarray, np.ndarray]:
        shard = self._shards.get(version)
        if shard is None:
            self.load(version)
            shard = self._shards[version]
        return shard.search(queries, k)

    def search_many(self, queries: np.ndarray, ks: np.ndarray, version: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Several requests' queries in one call: (rows, scores, lengths), the per-query answers concatenated.

        Each query is searched alone with its own k, so every answer is exactly ``search(query, k)``'s
        (one FAISS call with the largest k would change HNSW/IVF answers, which depend on k); what the
        batch saves is the remote calls, not the search.
        """
        parts = [self.search(q[None, :], int(k), version) for q, k in zip(queries, ks, strict=True)]
        lengths = np.array([r.shape[1] for r, _ in parts], np.int64)
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), lengths
        return (np.concatenate([r[0] for r, _ in parts]), np.concatenate([s[0] for _, s in parts]), lengths)

    def retain(self, versions: list[str]) -> list[str]:
        """Drop every loaded version not in ``versions``; returns what is still loaded."""
        with self._lock:
            self._shards = {v: s for v, s in self._shards.items() if v in versions}
        return sorted(self._shards)

    def info(self) -> dict:
        return {
            "shard_id": self.shard_id,
            "num_shards": self.num_shards,
            "versions": {v: {"kind": s.kind, "size": s.size} for v, s in self._shards.items()},
            "build_seconds": dict(self.build_seconds),
        }


class RetrievalShard:
    """Serve deployment wrapper: builds happen in a worker thread so searches on old versions go on."""

    def __init__(self, cfg: ServingConfig | dict, shard_id: int, num_shards: int):
        import faiss

        faiss.omp_set_num_threads(1)  # many small actors on few cores: intra-query threads only contend
        cfg = cfg if isinstance(cfg, ServingConfig) else ServingConfig(**cfg)
        self.core = RetrievalShardCore(cfg, shard_id, num_shards)
        self.versions = VersionSet()
        self.versions.active = self.core.load(cfg.retrieval_version)

    async def reconfigure(self, user_config: dict) -> None:
        """Fleet-wide rollout (every replica): load the spec's versions, keep the previous active one."""
        spec = RolloutSpec(**user_config)
        await asyncio.to_thread(self.versions.apply, spec.retrieval_versions(), self.core.load, self.core.retain)

    async def replica_versions(self) -> dict:
        """Read-only, per replica: the version the last ``reconfigure`` made active and the versions loaded.

        Requests load whatever version they name, so only ``active`` shows that the rollout reached this replica.
        """
        return {"replica": replica_id(), "active": self.versions.active, "loaded": sorted(self.core._shards)}

    async def load(self, version: str | None) -> str:
        return await asyncio.to_thread(self.core.load, version)

    async def search(self, queries: np.ndarray, k: int, version: str) -> tuple[np.ndarray, np.ndarray]:
        if version not in self.core._shards:
            await asyncio.to_thread(self.core.load, version)
        return self.core.search(queries, k, version)

    async def search_many(self, queries: np.ndarray, ks: np.ndarray, version: str
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batched hop (:class:`recsys.serving.pipeline.candidates.shard_client.ShardClient`): one call
        carries every query the ingress collected while its previous call was in flight."""
        if version not in self.core._shards:
            await asyncio.to_thread(self.core.load, version)
        return self.core.search_many(queries, ks, version)

    async def retain(self, versions: list[str]) -> list[str]:
        return self.core.retain(versions)

    async def info(self) -> dict:
        return self.core.info()

    async def check_health(self) -> None:
        if not self.core._shards:
            raise RuntimeError("no retrieval version loaded")
