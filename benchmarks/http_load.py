"""HTTP load on loopback: p50/p95/p99 latency and throughput of POST /v1/recommendations.

A bounded loop: each concurrency level runs until ``--duration`` seconds OR ``--max-requests``
requests, whichever comes first, then stops by itself. Against a running app (``--url``) or an
app this script deploys on a local Ray cluster from synthetic, contract-conformant artifacts
(``--catalog default`` = 4,000 items / 6,000 users like the default dataset; ``--catalog 1m`` =
1,000,000 items). The ratio printed is throughput vs concurrency 1 measured in the same run.

    python benchmarks/http_load.py                       # deploy default catalog, c = 1, 8, 32, 30 s each
    python benchmarks/http_load.py --catalog 1m          # 1M-item catalog (IVF-PQ shards)
    python benchmarks/http_load.py --url http://127.0.0.1:8000 --users 6000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_synthetic_store(root: Path, n_items: int, n_users: int, dim: int, seed: int = 0) -> Path:
    """two_tower / ranker / popularity / item_knn versions + items.parquet, per docs/contracts.md."""
    import pandas as pd
    import torch
    from torch import nn

    from recsys.platform.model_store import ModelStore

    rng = np.random.default_rng(seed)
    store = ModelStore(root / "models")
    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    n_clusters = max(8, min(1000, n_items // 100))
    cluster = rng.integers(0, n_clusters, n_items)
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    emb = np.empty((n_items, dim), np.float32)
    for s in range(0, n_items, 200_000):
        e = min(n_items, s + 200_000)
        emb[s:e] = centers[cluster[s:e]] + 0.5 * rng.normal(size=(e - s, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    class UserTower(nn.Module):
        def __init__(self, n_users: int, dim: int, item_emb: torch.Tensor):
            super().__init__()
            self.user_emb = nn.Embedding(n_users, dim)
            self.register_buffer("item_emb", item_emb)

        def forward(self, user_index: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
            mask = (history >= 0).float().unsqueeze(-1)
            h = (self.item_emb[history.clamp(min=0)] * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            u = self.user_emb(user_index.clamp(min=0)) * (user_index >= 0).float().unsqueeze(-1)
            return nn.functional.normalize(u + h + 1e-3, dim=-1)

    class Ranker(nn.Module):
        def __init__(self, n_dense: int):
            super().__init__()
            self.lin = nn.Linear(n_dense, 1)
            self.bias = nn.Embedding(1 << 16, 1)

        def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
            return self.lin(dense).squeeze(-1) + self.bias(sparse).sum(1).squeeze(-1)

    # the tower only needs item vectors for history lookups; a small table keeps the TorchScript file light
    tower = torch.jit.script(UserTower(n_users, dim, torch.from_numpy(emb[: min(n_items, 50_000)].copy())))
    with store.write_version("two_tower", "v1", kind="retrieval") as d:
        np.save(d / "item_ids.npy", item_ids)
        np.save(d / "user_ids.npy", user_ids)
        np.save(d / "item_embeddings.npy", emb)
        tower.save(str(d / "user_tower.pt"))
        (d / "config.json").write_text(json.dumps({"embedding_dim": dim, "history_length": 20}))
    spec = {"dense": ["retrieval_score", "item_ctr_7d", "user_events_7d"],
            "sparse": [{"name": "item_id", "vocab_size": 1 << 16, "hash": True}], "normalization": {}}
    with store.write_version("ranker", "v1", kind="ranking") as d:
        torch.jit.script(Ranker(len(spec["dense"]))).save(str(d / "ranker.pt"))
        (d / "feature_spec.json").write_text(json.dumps(spec))
    scores = (1.0 / np.arange(1, n_items + 1) ** 0.9).astype(np.float32)
    pop_ids = rng.permutation(item_ids)
    with store.write_version("popularity", "v1", kind="baseline") as d:
        np.savez(d / "model.npz", item_ids=pop_ids[: int(n_items * 0.95)], scores=scores[: int(n_items * 0.95)])
    with store.write_version("item_knn", "v1", kind="baseline") as d:
        nb = rng.integers(0, n_items, size=(n_items, 10)).astype(np.int64)
        np.savez(d / "model.npz", item_ids=item_ids, neighbors=nb, weights=rng.random((n_items, 10), np.float32))
    for name in ("two_tower", "ranker", "popularity", "item_knn"):
        store.promote(name, "v1")
    genres = np.array(["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation"])
    g1, g2 = genres[cluster % len(genres)], genres[(cluster // len(genres)) % len(genres)]
    now = pd.Timestamp("2026-01-01", tz="UTC")
    items = pd.DataFrame({
        "item_id": item_ids,
        "title": [f"item {i}" for i in item_ids] if n_items <= 100_000 else "item",
        "genres": np.char.add(np.char.add(g1.astype(str), "|"), g2.astype(str)),
        "description": "",
        "created_at": now - pd.to_timedelta(rng.integers(0, 365, n_items), unit="D"),
        "available": rng.random(n_items) > 0.02,
    })
    items.to_parquet(root / "items.parquet", index=False)
    return root


def deploy(root: Path, num_shards: int, redis_url: str, port: int) -> str:
    import ray
    from ray import serve

    from recsys.serving.app import build_app

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"model_store_uri": str(root / "models"), "catalog_path": str(root / "items.parquet"),
            "num_shards": num_shards, "redis_url": redis_url, "exposure_log_dir": str(root / "exposures"),
            "exploration_rate": 0.1}
    serve.run(build_app(args), name="recsys_bench", route_prefix="/", blocking=False)
    return f"http://127.0.0.1:{port}"


def wait_ready(url: str, timeout: float) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s")


async def run_level(url: str, concurrency: int, duration: float, max_requests: int, n_users: int,
                    n: int, seed: int) -> dict:
    import httpx

    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + duration

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued, errors
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            user = int(rng.integers(1, n_users + 1)) if rng.random() > 0.1 else int(rng.integers(10**9, 2 * 10**9))
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/recommendations", json={"user_id": user, "n": n})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for _ in range(3):  # warm-up
            await client.post("/v1/recommendations", json={"user_id": 1, "n": n})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": wall,
        "rps": len(latencies) / wall if wall else 0.0,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p95": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="Load an already running app instead of deploying one.")
    ap.add_argument("--catalog", choices=["default", "1m"], default="default")
    ap.add_argument("--num-shards", type=int, default=2)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--users", type=int, default=6000, help="Known user ids are 1..users (10%% cold users).")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds per concurrency level (upper bound).")
    ap.add_argument("--max-requests", type=int, default=20_000, help="Requests per level (upper bound).")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    args = ap.parse_args()

    url = args.url
    if url is None:
        n_items = 4_000 if args.catalog == "default" else 1_000_000
        root = Path(tempfile.mkdtemp(prefix="recsys-http-load-"))
        t0 = time.perf_counter()
        write_synthetic_store(root, n_items, args.users, 64)
        print(f"artifacts: {n_items:,} items x 64 in {time.perf_counter() - t0:.1f}s at {root}")
        t0 = time.perf_counter()
        url = deploy(root, args.num_shards, args.redis_url, _free_port())
        wait_ready(url, args.ready_timeout)
        print(f"deployed {args.num_shards} shards in {time.perf_counter() - t0:.1f}s at {url}")
    else:
        wait_ready(url, 30)
    print(f"{'conc':>5}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>9}{'vs c=1':>8}")
    base = None
    for i, c in enumerate(int(v) for v in args.concurrency.split(",")):
        res = asyncio.run(run_level(url, c, args.duration, args.max_requests, args.users, args.n, seed=i))
        base = base or res["rps"]
        print(f"{c:>5}{res['requests']:>10}{res['errors']:>8}{res['p50']:>9.1f}{res['p95']:>9.1f}"
              f"{res['p99']:>9.1f}{res['rps']:>9.1f}{res['rps'] / base:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
