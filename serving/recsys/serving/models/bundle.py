"""The model bundle a request is served with, and how a new bundle is loaded and swapped in.

A *bundle* is everything one answer depends on: the resolved versions (retrieval, ranking,
popularity, item-kNN), the ingress-side sources built from them, the exploration state and the
result-cache epoch. It is replaced as one object (a single attribute write), so a request that
picked up a bundle keeps a consistent set of versions even while a hot swap is in progress.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from recsys.platform.model_store import ModelStore, ModelStoreError
from recsys.serving.config import ServingConfig
from recsys.serving.models.artifacts import (
    ArtifactError,
    Catalog,
    RankerSpec,
    RetrievalArtifacts,
    load_item_knn,
    load_popularity,
    load_ranker_spec,
    load_retrieval,
    resolve_version,
)
from recsys.serving.pipeline.cache.result_cache import request_shape_hash
from recsys.serving.pipeline.candidates.sequential import SequentialCandidates
from recsys.serving.pipeline.candidates.sources import ItemKnnCandidates, PopularityCandidates
from recsys.serving.pipeline.exploration.thompson import ThompsonExplorer


@dataclass(frozen=True)
class ActiveVersions:
    """What unassigned traffic uses; replaced as a whole on hot swap."""

    retrieval: str
    ranking: str | None
    popularity: str | None
    item_knn: str | None
    sequential: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"retrieval": self.retrieval}
        for k in ("ranking", "popularity", "item_knn", "sequential"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        return out


@dataclass
class Sources:
    """Secondary candidate sources that live in the ingress (small, loaded per bundle)."""

    popularity: PopularityCandidates | None = None
    item_knn: ItemKnnCandidates | None = None
    sequential: SequentialCandidates | None = None


@dataclass(frozen=True)
class Bundle:
    """One consistent serving state; see the module docstring."""

    versions: ActiveVersions
    sources: Sources = field(default_factory=Sources)
    explorer: ThompsonExplorer | None = None
    cache_epoch: str = ""


class BundleLoader:
    """Resolves versions in the model store and loads the ingress-side artifacts (blocking I/O)."""

    def __init__(self, cfg: ServingConfig, store: ModelStore, catalog: Catalog, has_ranker: bool):
        self.cfg = cfg
        self.store = store
        self.catalog = catalog
        self.has_ranker = has_ranker
        self._retrieval: dict[str, RetrievalArtifacts] = {}
        self._specs: dict[str, RankerSpec] = {}

    def resolve(self, retrieval: str | None, ranking: str | None) -> ActiveVersions:
        r = resolve_version(self.store, self.cfg.retrieval_model, retrieval).version
        rk = None
        if self.has_ranker:
            try:
                rk = resolve_version(self.store, self.cfg.ranking_model, ranking).version
            except ArtifactError:
                if ranking is not None:
                    raise
        pop = knn = None
        with contextlib.suppress(ArtifactError):
            pop = resolve_version(self.store, self.cfg.popularity_model, None).version
        with contextlib.suppress(ArtifactError):
            knn = resolve_version(self.store, self.cfg.item_knn_model, None).version
        seq = None
        if self.cfg.sequential_k:
            with contextlib.suppress(ArtifactError):
                seq = resolve_version(self.store, self.cfg.sequential_model, None).version
        return ActiveVersions(r, rk, pop, knn, seq)

    def load(self, versions: ActiveVersions) -> Bundle:
        """Load everything the ingress itself needs for ``versions`` (blocking; run in a thread)."""
        self.retrieval(versions.retrieval)
        if versions.ranking:
            self.spec(versions.ranking)
        sources = Sources()
        if versions.popularity:
            mv = self.store.get(self.cfg.popularity_model, versions.popularity)
            sources.popularity = PopularityCandidates(load_popularity(self.store, mv))
        if versions.item_knn:
            mv = self.store.get(self.cfg.item_knn_model, versions.item_knn)
            sources.item_knn = ItemKnnCandidates(load_item_knn(self.store, mv))
        if versions.sequential:
            mv = self.store.get(self.cfg.sequential_model, versions.sequential)
            sources.sequential = SequentialCandidates(load_retrieval(self.store, mv, with_tower=True, mmap=False))
        return Bundle(versions, sources, self._explorer(sources), self._fingerprint(versions))

    def cached_retrieval(self, version: str) -> RetrievalArtifacts | None:
        return self._retrieval.get(version)

    def retrieval(self, version: str) -> RetrievalArtifacts:
        art = self._retrieval.get(version)
        if art is None:
            mv = resolve_version(self.store, self.cfg.retrieval_model, version)
            art = load_retrieval(self.store, mv, with_tower=True, mmap=True)
            self._retrieval = {**self._retrieval, version: art}
        return art

    def cached_spec(self, version: str) -> RankerSpec | None:
        return self._specs.get(version)

    def spec(self, version: str) -> RankerSpec:
        spec = self._specs.get(version)
        if spec is None:
            mv = resolve_version(self.store, self.cfg.ranking_model, version)
            spec = load_ranker_spec(self.store, mv)
            self._specs = {**self._specs, version: spec}
        return spec

    def retain(self, retrieval_versions: list[str]) -> None:
        """Drop ingress-side retrieval artifacts of versions no longer served."""
        self._retrieval = {v: a for v, a in self._retrieval.items() if v in retrieval_versions}

    def _explorer(self, sources: Sources) -> ThompsonExplorer:
        cat = self.catalog
        new_ids = np.zeros(0, np.int64)
        if len(cat.index):
            newest = cat.newest_created_s()
            recent = np.zeros(len(cat.index), bool)
            if np.isfinite(newest):
                recent = np.nan_to_num(cat.created_at_s, nan=-np.inf) >= newest - self.cfg.new_item_days * 86_400
            untouched = np.zeros(len(cat.index), bool)
            if sources.popularity is not None:
                untouched = ~sources.popularity.has_interactions(cat.index.ids)
            new_ids = cat.index.ids[(recent | untouched) & cat.available]
        return ThompsonExplorer(new_ids, self.cfg.exploration_rate, self.cfg.exploration_seed)

    def _fingerprint(self, versions: ActiveVersions) -> str:
        """Versions plus their store write times: a re-written version name never hits old cache entries."""
        parts = []
        for model, name in (("retrieval", self.cfg.retrieval_model), ("ranking", self.cfg.ranking_model),
                            ("popularity", self.cfg.popularity_model), ("item_knn", self.cfg.item_knn_model),
                            ("sequential", self.cfg.sequential_model)):
            version = getattr(versions, model)
            created = ""
            if version:
                with contextlib.suppress(ModelStoreError, OSError):
                    created = str(self.store.get(name, version).metadata.get("created_at", ""))
            parts.append(f"{model}={version}@{created}")
        return request_shape_hash({"versions": parts})
