"""ANN vs exact retrieval on N x D clustered item vectors (default 1M x 64): recall@K and speed-up.

Index families in isolation (one unsharded index, query batches, 2 threads). What serving actually
runs (shards, its nlist/nprobe/k, one query on one thread, merged top-k) is benchmarks/ann_served.py.

Baseline and candidates run in the same process on the same query batch and thread count:
exact ``IndexFlatIP`` (brute force) vs FAISS ``IndexHNSWFlat`` and ``IndexIVFPQ`` (plain and with
the exact re-scoring ``IndexRefineFlat`` that recsys.serving uses for large shards). Build time is
bounded: IVF-PQ trains on a sample, HNSW uses a moderate efConstruction.

    python benchmarks/ann_vs_exact.py                     # 1M x 64, 1000 queries, 2 threads
    python benchmarks/ann_vs_exact.py --n-items 200000    # quicker
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from recsys.serving.pipeline.candidates.ann import _pq_subquantizers


def clustered_vectors(n: int, d: int, n_clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around random centres (items in a catalog cluster by taste), float32."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x[s : s + m] = centers[rng.integers(0, n_clusters, m)] + 0.5 * rng.normal(size=(m, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def timed_search(index: faiss.Index, q: np.ndarray, k: int, repeats: int = 3) -> tuple[np.ndarray, float]:
    best = float("inf")
    ids = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = index.search(q, k)
        best = min(best, time.perf_counter() - t0)
    return ids, best


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(g[g >= 0]) & set(t)) / len(t) for g, t in zip(got, truth, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--ef-search", default="128,256")
    ap.add_argument("--nlist", type=int, default=2048)
    ap.add_argument("--nprobe", default="16,64")
    ap.add_argument("--train-sample", type=int, default=100_000)
    ap.add_argument("--skip-hnsw", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    x = clustered_vectors(args.n_items, args.dim, args.clusters, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    q = x[rng.choice(len(x), args.queries, replace=False)] + 0.1 * rng.normal(size=(args.queries, args.dim))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)  # "users" near item clusters
    print(f"data: {args.n_items:,} x {args.dim} ({time.perf_counter() - t0:.1f}s), {args.queries} queries, "
          f"k={args.k}, {args.threads} threads")

    exact = faiss.IndexFlatIP(args.dim)
    exact.add(x)
    truth, t_exact = timed_search(exact, q, args.k)
    print(f"\n{'index':<34}{'build s':>9}{'recall@' + str(args.k):>12}{'ms/query':>10}{'QPS':>9}{'speed-up':>10}")
    row = "{:<34}{:>9.1f}{:>12.3f}{:>10.3f}{:>9.0f}{:>9.1f}x"
    print(row.format("exact IndexFlatIP (baseline)", 0.0, 1.0, 1e3 * t_exact / len(q), len(q) / t_exact, 1.0))

    if not args.skip_hnsw:
        t0 = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = args.ef_construction
        hnsw.add(x)
        build = time.perf_counter() - t0
        for ef in [int(v) for v in args.ef_search.split(",")]:
            hnsw.hnsw.efSearch = max(ef, args.k)
            ids, t = timed_search(hnsw, q, args.k)
            print(row.format(f"HNSW M={args.hnsw_m} efSearch={ef}", build, recall(ids, truth),
                             1e3 * t / len(q), len(q) / t, t_exact / t))
        del hnsw

    t0 = time.perf_counter()
    m = _pq_subquantizers(args.dim)
    quantizer = faiss.IndexFlatIP(args.dim)
    ivf = faiss.IndexIVFPQ(quantizer, args.dim, args.nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    sample = x[rng.choice(len(x), min(args.train_sample, len(x)), replace=False)]
    ivf.train(sample)
    ivf.add(x)
    build = time.perf_counter() - t0
    refine = faiss.IndexRefineFlat(ivf, faiss.swig_ptr(x))
    refine.k_factor = 4.0
    for nprobe in [int(v) for v in args.nprobe.split(",")]:
        ivf.nprobe = nprobe
        ids, t = timed_search(ivf, q, args.k)
        print(row.format(f"IVF{args.nlist},PQ{m}x8 nprobe={nprobe}", build, recall(ids, truth),
                         1e3 * t / len(q), len(q) / t, t_exact / t))
        ids, t = timed_search(refine, q, args.k)
        print(row.format(f"  + exact re-score (x4) nprobe={nprobe}", build, recall(ids, truth),
                         1e3 * t / len(q), len(q) / t, t_exact / t))


if __name__ == "__main__":
    main()
