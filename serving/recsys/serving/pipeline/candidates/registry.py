"""The registry of model-store candidate sources: what each is called, where it loads from, how many it gives.

Why a registry: bundle loading (resolve a version, load it), the result-cache fingerprint, the
response's ``model_versions`` and the candidate merge are the same for every source, so they loop
over :func:`source_specs` instead of naming sources one by one. Adding a source is one module plus
one config entry::

    # my_source.py
    def load(store, model_version):          # -> an object with .candidates(history, k)
        return MySource(...)

    # serving config (Serve args / Helm values serving.args)
    candidate_sources: {my_source: {module: my_package.my_source, model: my_model, k: 50}}

The module's ``load(store, mv)`` gets the resolved (promoted) version of ``model`` from the model
store; its source answers ``candidates(history, k) -> (item_ids, scores)`` best first (``history``:
the user's distinct recent items, most recent first). Its items appear in responses tagged with the
entry's name. Built-in sources (popularity, item-kNN, SASRec) are registered the same way from the
config fields they always had (``popularity_k``, ``knn_k``, ``sequential_k``, ``*_model``).
The content index is not here: it is built from the live catalog, not loaded from the store.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from recsys.platform.model_store import ModelStore, ModelVersion
from recsys.serving.config import ServingConfig
from recsys.serving.models.artifacts import load_item_knn, load_popularity, load_retrieval
from recsys.serving.pipeline.candidates.sequential import SequentialCandidates
from recsys.serving.pipeline.candidates.sources import ItemKnnCandidates, PopularityCandidates


class CandidateSource(Protocol):
    def candidates(self, history: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` (item ids, scores), best first."""
        ...


@dataclass(frozen=True)
class SourceSpec:
    """One registered source. ``name`` keys the bundle's versions and sources; ``tag`` marks its items."""

    name: str
    model: str  # model-store name
    k: int  # candidates per request (0: not asked; still loaded when ``keep_loaded``)
    load: Callable[[ModelStore, ModelVersion], Any]
    tag: str = ""
    needs_history: bool = False
    keep_loaded: bool = False  # other stages use it even at k == 0 (popularity prior, similar items)

    @property
    def item_tag(self) -> str:
        return self.tag or self.name


def _popularity(store: ModelStore, mv: ModelVersion) -> PopularityCandidates:
    return PopularityCandidates(load_popularity(store, mv))


def _item_knn(store: ModelStore, mv: ModelVersion) -> ItemKnnCandidates:
    return ItemKnnCandidates(load_item_knn(store, mv))


def _sequential(store: ModelStore, mv: ModelVersion) -> SequentialCandidates:
    return SequentialCandidates(load_retrieval(store, mv, with_tower=True, mmap=False))


def _module_loader(module: str) -> Callable[[ModelStore, ModelVersion], Any]:
    """The ``load`` function of a configured source module (imported once, when the specs are built)."""
    load = getattr(importlib.import_module(module), "load", None)
    if not callable(load):
        raise ValueError(f"candidate source module {module!r} has no load(store, model_version) function")
    return load


def source_specs(cfg: ServingConfig) -> list[SourceSpec]:
    """Every source of this config, in merge order: history sources first, then the rest.

    The content index (history-based, not from the store) is merged between the two groups by the
    candidate stage, as before the registry existed.
    """
    specs = [
        SourceSpec("item_knn", cfg.item_knn_model, cfg.knn_k, _item_knn, needs_history=True, keep_loaded=True),
        SourceSpec("sequential", cfg.sequential_model, cfg.sequential_k, _sequential, tag="sasrec",
                   needs_history=True),
        SourceSpec("popularity", cfg.popularity_model, cfg.popularity_k, _popularity, keep_loaded=True),
    ]
    for name, entry in cfg.candidate_sources.items():
        specs.append(SourceSpec(name, entry.model, entry.k, _module_loader(entry.module),
                                needs_history=entry.needs_history))
    return sorted(specs, key=lambda s: not s.needs_history)  # stable: built-ins keep their order
