"""FAISS indexes for one retrieval shard, and the merge of per-shard top-K lists.

Index choice (``ann="auto"``) follows shard size: exact ``IndexFlatIP`` while a brute-force scan
is cheap (recall 1.0, no build), ``IndexHNSWFlat`` for mid-size shards (best recall/latency, build
grows ~n log n), ``IndexIVFPQ`` (+ exact re-scoring of the short list via ``IndexRefineFlat``)
for large shards where HNSW's build time and memory get in the way. Item embeddings are
L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class AnnParams:
    kind: str = "auto"  # auto | flat | hnsw | ivfpq
    flat_max_items: int = 50_000
    hnsw_max_items: int = 300_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nprobe: int = 128  # chosen from benchmarks/ann_served.py (docs/serving.md "ANN as served")
    ivf_nlist: int | None = None  # None: ivf_default_nlist(shard size)
    ivf_train_sample: int = 100_000
    refine_k_factor: int = 4
    seed: int = 0

    def choose(self, n_items: int) -> str:
        if self.kind != "auto":
            return self.kind
        if n_items <= self.flat_max_items:
            return "flat"
        return "hnsw" if n_items <= self.hnsw_max_items else "ivfpq"


def _pq_subquantizers(dim: int) -> int:
    """Largest divisor of ``dim`` that is <= dim/4 (4 dimensions per 8-bit code keeps recall usable)."""
    for m in range(max(1, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def ivf_default_nlist(n: int) -> int:
    """``min(n/39, 4·√n)`` inverted lists (FAISS wants >= 39 training points per list), at least 16."""
    return int(min(max(1, n // 39), max(16, 4 * math.isqrt(n))))


def build_index(vectors: np.ndarray, params: AnnParams) -> tuple[faiss.Index, str]:
    """Build the index ``params`` picks for ``vectors`` (float32 [n, d]); returns (index, kind)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    kind = params.choose(n)
    if kind == "flat" or n == 0:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index, "flat"
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.hnsw_ef_construction
        index.add(x)
        index.hnsw.efSearch = params.hnsw_ef_search
        return index, "hnsw"
    if kind == "ivfpq":
        nlist = min(params.ivf_nlist or ivf_default_nlist(n), max(1, n // 39))
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, _pq_subquantizers(d), 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(params.seed)
        sample = x if n <= params.ivf_train_sample else x[rng.choice(n, params.ivf_train_sample, replace=False)]
        ivf.train(sample)
        ivf.nprobe = min(params.ivf_nprobe, nlist)
        index = faiss.IndexRefineFlat(ivf)
        index.k_factor = float(params.refine_k_factor)
        index.add(x)  # FAISS's Python wrappers keep `ivf` and `quantizer` referenced by `index`
        return index, "ivfpq"
    raise ValueError(f"unknown ann kind {kind!r}: use auto, flat, hnsw or ivfpq")


class FaissShard:
    """One shard's items: FAISS index over a subset of catalog rows, answering in global row numbers."""

    def __init__(self, vectors: np.ndarray, global_rows: np.ndarray, params: AnnParams):
        self.global_rows = np.asarray(global_rows, dtype=np.int64)
        self.index, self.kind = build_index(vectors, params)
        self.size = int(len(self.global_rows))

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the query-time knob of the built index (benchmarks sweep it without rebuilding)."""
        if self.kind == "ivfpq" and nprobe is not None:
            ivf = faiss.downcast_index(self.index.base_index)
            ivf.nprobe = min(nprobe, ivf.nlist)
        if self.kind == "hnsw" and ef_search is not None:
            self.index.hnsw.efSearch = ef_search

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (global rows [B, k'], scores [B, k']) with k' = min(k, shard size); -1 pads misses."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = int(min(k, self.size))
        if k <= 0:
            return np.zeros((len(q), 0), np.int64), np.zeros((len(q), 0), np.float32)
        scores, local = self.index.search(q, k)
        rows = np.where(local >= 0, self.global_rows[np.clip(local, 0, None)], -1)
        return rows.astype(np.int64), scores.astype(np.float32)


def shard_rows(n_items: int, shard_id: int, num_shards: int) -> np.ndarray:
    """Catalog rows owned by a shard: ``row % num_shards == shard_id`` (balanced whatever the order)."""
    return np.arange(shard_id, n_items, num_shards, dtype=np.int64)


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top lists of ONE query into the global top-``k`` (rows, scores), best first.

    Shards own disjoint rows, so no de-duplication is needed; -1 padding is dropped.
    """
    rows = [np.asarray(r).reshape(-1) for r, _ in parts]
    scores = [np.asarray(s).reshape(-1) for _, s in parts]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    r = np.concatenate(rows)
    s = np.concatenate(scores).astype(np.float32)
    keep = r >= 0
    r, s = r[keep], s[keep]
    if len(r) > k:
        top = np.argpartition(-s, k - 1)[:k]
        r, s = r[top], s[top]
    order = np.argsort(-s, kind="stable")
    return r[order].astype(np.int64), s[order]
