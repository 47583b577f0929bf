"""ANN measured as served: the serving's own shard indexes, scatter-gather merge, one query at a time, one thread.

What serving does per request (recsys.serving.deployments.retrieval_shard + stages.candidates): the catalog is split
into ``num_shards`` shards (row % S), each shard builds ``recsys.serving.pipeline.candidates.ann.build_index`` with the
``AnnParams`` of its ``ServingConfig`` (flat <= 50k items per shard < HNSW <= 300k < IVF-PQ with exact
re-scoring; nlist = min(n/39, 4·√n) per shard unless ``ivf_nlist`` is set), every shard is asked for the
top ``retrieval_k`` of ONE user vector on ONE FAISS thread, and ``merge_topk`` keeps the global top
``retrieval_k``. This benchmark builds exactly that (same functions, same parameters) and compares it
with exact search over the whole catalog, in the same process:

* recall@100: |served top-100 ∩ exact top-100| / 100;
* candidate recall@100: |all ``retrieval_k`` candidates ∩ exact top-100| / 100 (what the ranker can use);
* latency: per query, the slowest shard (shards are separate replicas searched concurrently) + merge,
  p50 and p99, and the speed-up over exact single-query search on one thread. Measured as the
  searching thread's CPU time (``time.thread_time``): for a one-thread search it equals wall time on
  a quiet machine, and unlike wall time it does not count the time the process waits for a core on
  a shared box (where wall-clock p50s jumped 50x between identical rows).

Vectors: ``clustered`` (tight clusters: the easy case the old benchmark used), ``weak`` (the same centres
with 4x the noise: weakly clustered, where IVF recall drops), ``two_tower`` (item and user embeddings
of a two-tower model the benchmark trains for a few hundred steps on a synthetic catalog, via
recsys.training's model and data code, without Ray).

    python benchmarks/ann_served.py                      # 200k items, served kind (HNSW) + IVF-PQ sweep
    python benchmarks/ann_served.py --n-items 1000000    # 1M items: IVF-PQ shards of 500k, as served
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import faiss
import numpy as np

from recsys.serving.config import ServingConfig
from recsys.serving.deployments.retrieval_shard import ann_params
from recsys.serving.pipeline.candidates.ann import AnnParams, FaissShard, ivf_default_nlist, merge_topk, shard_rows

TOP = 100


def clustered_vectors(n: int, d: int, n_clusters: int, noise: float, seed: int) -> np.ndarray:
    """Unit vectors around random centres (items cluster by taste); ``noise`` sets how tightly, float32."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x[s : s + m] = centers[rng.integers(0, n_clusters, m)] + noise * rng.normal(size=(m, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def near_item_queries(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = x[rng.choice(len(x), n, replace=False)] + 0.1 * rng.normal(size=(n, x.shape[1])).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def two_tower_vectors(n_items: int, n_queries: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Item embeddings and user (query) embeddings of a two-tower trained here on a synthetic catalog."""
    import torch

    from recsys.platform.data.split import split_events
    from recsys.platform.data.synthetic import SyntheticConfig, generate
    from recsys.training.base import Catalog
    from recsys.training.config import RetrievalConfig
    from recsys.training.item_features import ItemFeatures
    from recsys.training.two_tower.data import build_retrieval_data
    from recsys.training.two_tower.job import build_model, validation_recall

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    n_users = max(2000, n_items // 10)
    ds = generate(SyntheticConfig(n_users=n_users, n_items=n_items, n_events=max(200_000, 2 * n_items),
                                  candidate_pool=4000, seed=seed), progress=False)
    split = split_events(ds.events)
    catalog = Catalog.from_dataset(ds)
    rc = RetrievalConfig(history_length=20, batch_size=1024)
    feats = ItemFeatures.build(ds.items, catalog, text_buckets=rc.text_buckets)
    data = build_retrieval_data(split.train, split.validation, catalog, feats, rc.history_length, seed=seed)
    model = build_model(data, rc)
    opt = torch.optim.Adam(model.parameters(), lr=rc.learning_rate)
    rng = np.random.default_rng(seed)
    log_q = torch.from_numpy(data.log_q)
    for _ in range(steps):  # the per-batch step of recsys.training.two_tower.job.train_loop, one process
        b = rng.integers(0, len(data.ex_item), rc.batch_size)
        hist = data.histories(data.ex_user[b], data.ex_pos[b], rc.history_length)
        items = torch.from_numpy(data.ex_item[b])
        loss = model(torch.from_numpy(data.ex_user[b]), torch.from_numpy(hist), items, log_q[items])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    recall = validation_recall(model, data)
    with torch.no_grad():
        items = model.item_embeddings(data.n_items).numpy().astype(np.float32)
        pick = rng.choice(len(data.val_users), min(n_queries, len(data.val_users)), replace=False)
        users = model.user_tower(torch.from_numpy(data.val_users[pick]),
                                 torch.from_numpy(data.val_history[pick])).numpy().astype(np.float32)
    note = (f"{n_items:,} items, {steps} steps x {rc.batch_size}, val recall@20 {recall:.3f}, "
            f"{time.perf_counter() - t0:.0f}s")
    return items, users, note


def exact_truth(x: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact top-100 ids and the p50 single-query latency of exact search (one thread, whole catalog)."""
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, truth = index.search(q, TOP)
    times = []
    for i in range(min(len(q), 50)):
        t0 = time.thread_time()
        index.search(q[i : i + 1], TOP)
        times.append(time.thread_time() - t0)
    return truth, float(np.median(times))


def build_shards(x: np.ndarray, num_shards: int, params: AnnParams) -> tuple[list[FaissShard], float]:
    t0 = time.perf_counter()
    shards = [FaissShard(x[shard_rows(len(x), s, num_shards)], shard_rows(len(x), s, num_shards), params)
              for s in range(num_shards)]
    return shards, time.perf_counter() - t0


def served_search(shards: list[FaissShard], q: np.ndarray, k: int, truth: np.ndarray) -> dict[str, float]:
    """Scatter-gather per query like the ingress: recall@100, candidate recall@100, latency (slowest shard+merge)."""
    lat, rec, cand = [], [], []
    for i in range(len(q)):
        parts, slowest = [], 0.0
        for shard in shards:
            t0 = time.thread_time()
            rows, scores = shard.search(q[i : i + 1], k)
            slowest = max(slowest, time.thread_time() - t0)
            parts.append((rows[0], scores[0]))
        t0 = time.thread_time()
        rows, _ = merge_topk(parts, k)
        lat.append(slowest + time.thread_time() - t0)
        want = set(truth[i].tolist())
        rec.append(len(want & set(rows[:TOP].tolist())) / TOP)
        cand.append(len(want & set(rows.tolist())) / TOP)
    return {"recall": float(np.mean(rec)), "cand_recall": float(np.mean(cand)),
            "p50_ms": 1e3 * float(np.median(lat)), "p99_ms": 1e3 * float(np.percentile(lat, 99))}


ROW = "| {data} | {index} | {k} | {recall:.3f} | {cand:.3f} | {p50:.2f} | {p99:.2f} | {speedup:.1f}x | {build:.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-items", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data", default="clustered,weak,two_tower", help="comma list: clustered, weak, two_tower")
    ap.add_argument("--tt-items", type=int, default=100_000, help="catalog size of the trained two-tower")
    ap.add_argument("--tt-steps", type=int, default=300)
    ap.add_argument("--kinds", default="served,ivfpq", help="served (ServingConfig's auto choice) and/or a forced kind")
    ap.add_argument("--nprobe", default="8,16,32,64,128")
    ap.add_argument("--nlist-scale", default="1", help="multiples of the default nlist to build (e.g. 0.5,1,2)")
    ap.add_argument("--ef-search", default="64,128,256")
    ap.add_argument("--k", default="100,200", help="retrieval_k values (per shard and merged)")
    ap.add_argument("--build-threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = ServingConfig()  # the serving defaults: shards, kinds, thresholds, nprobe, efSearch, retrieval_k
    base = ann_params(cfg)
    ks = [int(v) for v in args.k.split(",")]
    print(f"serving defaults: num_shards={cfg.num_shards} ann={cfg.ann} flat<={cfg.flat_max_items} "
          f"hnsw<={cfg.hnsw_max_items} (M={cfg.hnsw_m}, efSearch={cfg.hnsw_ef_search}) ivf_nprobe={cfg.ivf_nprobe} "
          f"ivf_nlist={cfg.ivf_nlist or 'min(n/39, 4*sqrt(n))'} retrieval_k={cfg.retrieval_k}; "
          f"{args.queries} single queries, 1 search thread")
    print("\n| vectors | index per shard | k | recall@100 | candidate recall@100 | p50 CPU ms | p99 CPU ms "
          "| speed-up vs exact (p50) | build s |\n|---|---|---|---|---|---|---|---|---|")
    for data in args.data.split(","):
        faiss.omp_set_num_threads(args.build_threads)
        if data == "two_tower":
            x, q, note = two_tower_vectors(min(args.tt_items, args.n_items), args.queries, args.tt_steps, args.seed)
            print(f"(two_tower: {note})", flush=True)
        else:
            noise = 0.5 if data == "clustered" else 2.0
            x = clustered_vectors(args.n_items, args.dim, args.clusters, noise, args.seed)
            q = near_item_queries(x, args.queries, args.seed + 1)
        faiss.omp_set_num_threads(1)
        truth, t_exact = exact_truth(x, q)
        per_shard = len(x) // cfg.num_shards
        for kind in args.kinds.split(","):
            params = base if kind == "served" else replace(base, kind=kind)
            scales = [float(s) for s in args.nlist_scale.split(",")] if params.choose(per_shard) == "ivfpq" else [1.0]
            for scale in scales:
                if params.choose(per_shard) == "ivfpq":
                    params = replace(params, ivf_nlist=max(16, int(scale * ivf_default_nlist(per_shard))))
                faiss.omp_set_num_threads(args.build_threads)
                shards, build = build_shards(x, cfg.num_shards, params)
                faiss.omp_set_num_threads(1)
                chosen = shards[0].kind
                if chosen == "ivfpq":
                    knobs = [("nprobe", int(v)) for v in args.nprobe.split(",")]
                elif chosen == "hnsw":
                    knobs = [("efSearch", int(v)) for v in args.ef_search.split(",")]
                else:
                    knobs = [("", 0)]
                for name, value in knobs:
                    for shard in shards:
                        shard.set_search_params(nprobe=value if name == "nprobe" else None,
                                                ef_search=value if name == "efSearch" else None)
                    for k in ks:
                        r = served_search(shards, q, k, truth)
                        label = f"{'served: ' if kind == 'served' else ''}{chosen}"
                        if chosen == "ivfpq":
                            nlist = faiss.downcast_index(shards[0].index.base_index).nlist
                            label += f" nlist={nlist}"
                        if name:
                            label += f" {name}={value}"
                        print(ROW.format(data=f"{data} {len(x):,}", index=label, k=k, recall=r["recall"],
                                         cand=r["cand_recall"], p50=r["p50_ms"], p99=r["p99_ms"],
                                         speedup=1e3 * t_exact / r["p50_ms"], build=build), flush=True)
                del shards
    print(f"\nexact baseline: IndexFlatIP over the whole catalog, p50 single-query latency measured per dataset "
          f"(speed-up column); {cfg.num_shards} shards searched as separate replicas (latency = slowest shard + merge)")


if __name__ == "__main__":
    main()
