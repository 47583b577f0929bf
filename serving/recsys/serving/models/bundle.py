"""The model bundle a request is served with, and how a new bundle is loaded and swapped in.

A *bundle* is everything one answer depends on: the resolved versions (retrieval, ranking,
popularity, item-kNN), the ingress-side sources built from them, the exploration state and the
result-cache epoch. It is replaced as one object (a single attribute write), so a request that
picked up a bundle keeps a consistent set of versions even while a hot swap is in progress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.platform.model_store import ModelStore, ModelStoreError
from recsys.serving.config import ServingConfig
from recsys.serving.models.artifacts import (
    ArtifactError,
    Catalog,
    RankerSpec,
    RetrievalArtifacts,
    load_ranker_spec,
    load_retrieval,
    resolve_version,
)
from recsys.serving.pipeline.cache.result_cache import request_shape_hash
from recsys.serving.pipeline.candidates.registry import SourceSpec, source_specs
from recsys.serving.pipeline.candidates.sequential import SequentialCandidates
from recsys.serving.pipeline.candidates.sources import ItemKnnCandidates, PopularityCandidates
from recsys.serving.pipeline.exploration.thompson import ThompsonExplorer


@dataclass(frozen=True)
class ActiveVersions:
    """What unassigned traffic uses; replaced as a whole on hot swap. ``sources``: (name, version) pairs."""

    retrieval: str
    ranking: str | None
    sources: tuple[tuple[str, str], ...] = ()

    def source(self, name: str) -> str | None:
        return dict(self.sources).get(name)

    @property
    def popularity(self) -> str | None:
        return self.source("popularity")

    @property
    def item_knn(self) -> str | None:
        return self.source("item_knn")

    @property
    def sequential(self) -> str | None:
        return self.source("sequential")

    def as_dict(self) -> dict[str, str]:
        out = {"retrieval": self.retrieval}
        if self.ranking:
            out["ranking"] = self.ranking
        return {**out, **dict(self.sources)}


class Sources:
    """The bundle's store-loaded candidate sources by registry name, with their specs (merge order)."""

    def __init__(self, specs: Sequence[SourceSpec] = (), **by_name: Any):
        self.specs = tuple(specs)
        self.by_name = by_name

    def get(self, name: str) -> Any:
        return self.by_name.get(name)

    def active(self) -> list[tuple[SourceSpec, Any]]:
        """(spec, source) of every loaded source, in merge order."""
        return [(spec, self.by_name[spec.name]) for spec in self.specs if spec.name in self.by_name]

    @property
    def popularity(self) -> PopularityCandidates | None:
        return self.get("popularity")

    @property
    def item_knn(self) -> ItemKnnCandidates | None:
        return self.get("item_knn")

    @property
    def sequential(self) -> SequentialCandidates | None:
        return self.get("sequential")


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
        self.specs = source_specs(cfg)  # the candidate-source registry (pipeline/candidates/registry.py)

    def resolve(self, retrieval: str | None, ranking: str | None) -> ActiveVersions:
        r = resolve_version(self.store, self.cfg.retrieval_model, retrieval).version
        rk = None
        if self.has_ranker:
            try:
                rk = resolve_version(self.store, self.cfg.ranking_model, ranking).version
            except ArtifactError:
                if ranking is not None:
                    raise
        found = []
        for spec in self.specs:
            if spec.k or spec.keep_loaded:
                with contextlib.suppress(ArtifactError):
                    found.append((spec.name, resolve_version(self.store, spec.model, None).version))
        return ActiveVersions(r, rk, tuple(found))

    def load(self, versions: ActiveVersions) -> Bundle:
        """Load everything the ingress itself needs for ``versions`` (blocking; run in a thread)."""
        self.retrieval(versions.retrieval)
        if versions.ranking:
            self.spec(versions.ranking)
        loaded = {}
        for spec in self.specs:
            version = versions.source(spec.name)
            if version:
                loaded[spec.name] = spec.load(self.store, self.store.get(spec.model, version))
        sources = Sources(self.specs, **loaded)
        return Bundle(versions, sources, self._explorer(sources), self._fingerprint(versions))

    def release(self) -> None:
        """Forget the cached artifacts (each memory-mapped embedding file holds a file descriptor) when the
        service closes: FastAPI caches route functions, which keep a replaced service object alive."""
        self._retrieval, self._specs = {}, {}

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
        models = {"retrieval": self.cfg.retrieval_model, "ranking": self.cfg.ranking_model,
                  **{spec.name: spec.model for spec in self.specs}}
        parts = []
        for model, version in versions.as_dict().items():
            created = ""
            with contextlib.suppress(ModelStoreError, OSError):
                created = str(self.store.get(models[model], version).metadata.get("created_at", ""))
            parts.append(f"{model}={version}@{created}")
        return request_shape_hash({"versions": parts})
