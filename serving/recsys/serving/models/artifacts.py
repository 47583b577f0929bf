"""Readers for the model-store artifacts serving loads (format: docs/contracts.md).

Training writes these files; serving only reads them, so nothing here imports training code.
Every loader takes a :class:`ModelVersion` (already resolved: a concrete version, never
"promoted") and returns an immutable, self-contained object; a deployment can hold several of
them keyed by version and swap between them atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.platform.model_store import ModelStore, ModelStoreError, ModelVersion


class ArtifactError(RuntimeError):
    """A stored version is missing a file or has the wrong shape; the message says which."""


def resolve_version(store: ModelStore, name: str, version: str | None) -> ModelVersion:
    """A concrete version of ``name``: ``version`` itself, or the promoted one when it is None."""
    try:
        return store.get(name, version)
    except ModelStoreError as e:
        raise ArtifactError(str(e)) from e


def _dir(store: ModelStore, mv: ModelVersion) -> Path:
    return store.local_path(mv)


def _need(path: Path) -> Path:
    if not path.exists():
        raise ArtifactError(f"{path.parent.name}: required file {path.name} is missing")
    return path


class IdIndex:
    """Raw int64 id <-> dense row index, via a sorted copy (no Python dict: 1M ids stay cheap)."""

    DENSE_SPAN = 4
    """Ids spanning at most this many times their count get a direct id -> row table: one gather per
    lookup instead of a binary search (at 1M ids, 500 random searches cost ~1 ms of cache misses)."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64)
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]
        self._table: np.ndarray | None = None
        if len(self.ids):
            lo, hi = int(self._sorted[0]), int(self._sorted[-1])
            if hi - lo + 1 <= self.DENSE_SPAN * len(self.ids) and len(self.ids) < 2**31:
                self._lo = lo
                self._table = np.full(hi - lo + 1, -1, np.int32)
                self._table[self.ids[::-1] - lo] = np.arange(len(self.ids) - 1, -1, -1, dtype=np.int32)  # first wins

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, raw: np.ndarray | list[int]) -> np.ndarray:
        """Row index of each raw id, -1 where unknown."""
        raw = np.asarray(raw, dtype=np.int64).reshape(-1)
        if len(self._sorted) == 0:
            return np.full(len(raw), -1, dtype=np.int64)
        if self._table is not None:
            pos = raw - self._lo
            ok = (pos >= 0) & (pos < len(self._table))
            out = np.full(len(raw), -1, np.int64)
            out[ok] = self._table[pos[ok]]
            return out
        pos = np.searchsorted(self._sorted, raw)
        pos = np.clip(pos, 0, len(self._sorted) - 1)
        found = self._sorted[pos] == raw
        return np.where(found, self._order[pos], -1).astype(np.int64)


@dataclass
class RetrievalArtifacts:
    """A `two_tower` version: id maps, item embeddings (memory-mapped) and the TorchScript user tower."""

    version: str
    item_ids: np.ndarray
    item_index: IdIndex
    user_index: IdIndex
    item_embeddings: np.ndarray  # [n_items, D] float32, L2-normalised; np.memmap when loaded lazily
    config: dict[str, Any]
    user_tower: Any = field(default=None, repr=False)  # torch.jit.ScriptModule

    @property
    def dim(self) -> int:
        return int(self.item_embeddings.shape[1])

    @property
    def history_length(self) -> int:
        return int(self.config.get("history_length", 20))

    def vectors(self, item_ids: np.ndarray) -> np.ndarray:
        """Item vectors of ``item_ids`` (zeros for unknown ids); rows read in sorted order (memory-mapped)."""
        rows = self.item_index.lookup(item_ids)
        emb = np.zeros((len(item_ids), self.dim), np.float32)
        known = rows >= 0
        if known.any():
            idx = rows[known]
            order = np.argsort(idx)
            vals = np.asarray(self.item_embeddings[idx[order]], np.float32)
            emb[np.flatnonzero(known)[order]] = vals
        return emb


def load_retrieval(store: ModelStore, mv: ModelVersion, *, with_tower: bool = True, mmap: bool = True):
    """Load a `two_tower` version; ``mmap`` keeps the embedding matrix on disk until rows are touched."""
    d = _dir(store, mv)
    item_ids = np.load(_need(d / "item_ids.npy"))
    user_ids = np.load(_need(d / "user_ids.npy")) if (d / "user_ids.npy").exists() else np.zeros(0, np.int64)
    emb = np.load(_need(d / "item_embeddings.npy"), mmap_mode="r" if mmap else None)
    if emb.ndim != 2 or emb.shape[0] != len(item_ids):
        raise ArtifactError(
            f"{mv.name}/{mv.version}: item_embeddings shape {emb.shape} does not match {len(item_ids)} item_ids"
        )
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    tower = None
    if with_tower:
        import torch

        tower = torch.jit.load(str(_need(d / "user_tower.pt")), map_location="cpu")
        tower.eval()
    return RetrievalArtifacts(
        version=mv.version,
        item_ids=item_ids.astype(np.int64),
        item_index=IdIndex(item_ids),
        user_index=IdIndex(user_ids),
        item_embeddings=emb,
        config=config,
        user_tower=tower,
    )


@dataclass
class RankerSpec:
    """feature_spec.json: dense column names (in order), sparse columns, normalisation."""

    dense: list[str]
    sparse: list[dict[str, Any]]
    normalization: dict[str, dict[str, float]]
    retrieval_score: bool

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankerSpec:
        return cls(
            dense=list(d.get("dense", [])),
            sparse=[s if isinstance(s, dict) else {"name": str(s), "vocab_size": 1, "hash": True}
                    for s in d.get("sparse", [])],
            normalization=dict(d.get("normalization", {})),
            retrieval_score=bool(d.get("retrieval_score", "retrieval_score" in d.get("dense", []))),
        )


@dataclass
class RankerArtifacts:
    version: str
    spec: RankerSpec
    model: Any = field(default=None, repr=False)


def load_ranker_spec(store: ModelStore, mv: ModelVersion) -> RankerSpec:
    return RankerSpec.from_dict(json.loads(_need(_dir(store, mv) / "feature_spec.json").read_text()))


def load_ranker(store: ModelStore, mv: ModelVersion) -> RankerArtifacts:
    import torch

    d = _dir(store, mv)
    model = torch.jit.load(str(_need(d / "ranker.pt")), map_location="cpu")
    model.eval()
    return RankerArtifacts(version=mv.version, spec=load_ranker_spec(store, mv), model=model)


@dataclass
class PopularityArtifacts:
    version: str
    item_ids: np.ndarray  # sorted by score, descending
    scores: np.ndarray


def load_popularity(store: ModelStore, mv: ModelVersion) -> PopularityArtifacts:
    with np.load(_need(_dir(store, mv) / "model.npz")) as z:
        ids, scores = z["item_ids"].astype(np.int64), z["scores"].astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    return PopularityArtifacts(version=mv.version, item_ids=ids[order], scores=scores[order])


@dataclass
class ItemKnnArtifacts:
    version: str
    item_ids: np.ndarray
    item_index: IdIndex
    neighbors: np.ndarray  # [n, K] indices into item_ids (-1 padding)
    weights: np.ndarray  # [n, K]


def load_item_knn(store: ModelStore, mv: ModelVersion) -> ItemKnnArtifacts:
    with np.load(_need(_dir(store, mv) / "model.npz")) as z:
        ids = z["item_ids"].astype(np.int64)
        return ItemKnnArtifacts(
            version=mv.version,
            item_ids=ids,
            item_index=IdIndex(ids),
            neighbors=z["neighbors"].astype(np.int64),
            weights=z["weights"].astype(np.float32),
        )


@dataclass
class Catalog:
    """Item metadata the re-ranker needs; an empty catalog means "all available, no genres, no dates"."""

    index: IdIndex
    genres: list[frozenset[str]]
    created_at_s: np.ndarray  # epoch seconds, NaN unknown
    available: np.ndarray  # bool

    def genres_at(self, rows: np.ndarray) -> np.ndarray:
        """Genre sets of catalog ``rows`` as one object-array gather (row -1: the empty set).

        The lookup array is rebuilt when ``genres`` is replaced (the live catalog grows with posted
        items), so a stage never indexes a stale, shorter array.
        """
        cached = self.__dict__.get("_genre_array")
        if cached is None or cached[0] is not self.genres or len(cached[1]) != len(self.genres) + 1:
            arr = np.empty(len(self.genres) + 1, dtype=object)
            arr[:] = [*self.genres, frozenset()]
            cached = (self.genres, arr)
            self.__dict__["_genre_array"] = cached
        return cached[1][rows]

    @classmethod
    def empty(cls) -> Catalog:
        return cls(IdIndex(np.zeros(0, np.int64)), [], np.zeros(0), np.zeros(0, bool))

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> Catalog:
        ids = items["item_id"].to_numpy(np.int64)
        genres = [
            frozenset(x for x in str(g).split("|") if x) if g is not None else frozenset()
            for g in items.get("genres", pd.Series([""] * len(items)))
        ]
        if "created_at" in items:
            created = pd.to_datetime(items["created_at"], utc=True)
            created_s = (created.astype("int64") / 1e9).to_numpy(np.float64)
            created_s[created.isna().to_numpy()] = np.nan
        else:
            created_s = np.full(len(ids), np.nan)
        available = items["available"].to_numpy(bool) if "available" in items else np.ones(len(ids), bool)
        return cls(IdIndex(ids), genres, created_s, available)

    @classmethod
    def load(cls, path: Path | None) -> Catalog:
        items = read_catalog(path)
        return cls.empty() if items is None else cls.from_items(items)

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        return self.index.lookup(item_ids)

    def genres_of(self, item_id: int, row: int | None = None) -> frozenset[str]:
        r = self.index.lookup([item_id])[0] if row is None else row
        return self.genres[r] if r >= 0 else frozenset()

    def is_available(self, rows: np.ndarray) -> np.ndarray:
        out = np.ones(len(rows), bool)
        known = rows >= 0
        out[known] = self.available[rows[known]]
        return out

    def newest_created_s(self) -> float:
        finite = self.created_at_s[np.isfinite(self.created_at_s)]
        return float(finite.max()) if len(finite) else float("nan")


def read_catalog(path: Path | str | None) -> pd.DataFrame | None:
    """The catalog parquet (a file, or a dataset dir holding items.parquet): the one reader of that file.

    None when no catalog is configured; a configured path that does not exist is an error. The
    ingress reads it once at start-up and builds the catalog, the display metadata and the live
    catalog's content index from the same frame.
    """
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        p = p / "items.parquet"
    if not p.exists():
        raise ArtifactError(f"catalog file {p} does not exist")
    return pd.read_parquet(p)
