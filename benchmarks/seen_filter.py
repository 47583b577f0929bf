"""What the already-seen filter costs per request: candidate generation with S seen items vs 20.

Serving takes each source's top-k among items the user has *not* seen (as the offline evaluator
does), so it asks every source for ``k + min(S, seen_overfetch)`` and filters (``recsys.features.seen``,
docs/serving.md "Seen items"). This times the candidate stage in-process (local shard objects, no Ray,
no Redis) for seen sets of S random catalog items (the newest 20 are the history), plus the online
read's decoding of the stored seen string (``unpack`` + ``recent_distinct``), as ratios against
S = 20 in the same process - what serving filtered before the seen set (the recent items only):

    python benchmarks/seen_filter.py                    # 4,000 items
    python benchmarks/seen_filter.py --items 1000000    # IVF-PQ shards
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--sizes", default="20,100,500,1000,5000",
                    help="Seen-set sizes S (comma-separated; baseline first)")
    ap.add_argument("--requests", type=int, default=300, help="Timed requests per size")
    ap.add_argument("--retrieval-k", type=int, default=400)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = ap.parse_args()

    from http_load import write_synthetic_store
    from serve_overhead import serving_args

    from recsys.features.seen import pack, recent_distinct, unpack
    from recsys.serving.app import parse_args
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService
    from recsys.serving.pipeline.state import RequestState

    root = Path(tempfile.mkdtemp(prefix="recsys-seen-filter-"))
    write_synthetic_store(root, args.items, 1000, 64)
    cfg = parse_args({**serving_args(root, 2, args.redis_url, args.retrieval_k, "local", "deployment"),
                      "cache": {"enabled": False}})
    service = RecommendationService(cfg, [RetrievalShard(cfg, i, 2) for i in range(2)], Ranker(cfg))
    pool = min(args.items, 50_000)
    sizes = [int(s) for s in args.sizes.split(",") if int(s) < pool // 2]  # a user sees < half the catalog
    rng = np.random.default_rng(0)
    # http_load's synthetic user tower embeds only the first 50,000 items (history lookups): seen ids come from them
    item_ids = np.arange(1, pool + 1, dtype=np.int64)

    async def run() -> dict[int, tuple[float, float, float]]:
        await service.start()
        bundle = service.bundle
        version = bundle.versions.retrieval
        art = service.loader.retrieval(version)
        out = {}
        for size in sizes:
            stage, decode, cands = [], [], []
            for r in range(args.requests + 20):
                blob = pack(rng.choice(item_ids, size, replace=False))
                t0 = time.process_time()
                ids = unpack(blob)
                history = recent_distinct(ids, 20, tail=20)
                t1 = time.process_time()
                req = RecommendationRequest(user_id=int(rng.integers(1, 1000)), n=20)
                cset = await service.candidates(RequestState("b"), req, art, version, history, bundle.sources, ids)
                t2 = time.process_time()
                if r >= 20:  # the first requests warm up
                    decode.append(t1 - t0)
                    stage.append(t2 - t1)
                    cands.append(len(cset))
            out[size] = (float(np.median(stage)) * 1e3, float(np.median(decode)) * 1e3, float(np.mean(cands)))
        return out

    res = asyncio.run(run())
    base = res[sizes[0]][0]
    print(f"candidate stage, {args.items:,} items, retrieval_k {args.retrieval_k}, seen_overfetch "
          f"{cfg.seen_overfetch}, {args.requests} requests per size (CPU ms, p50):")
    print(f"{'seen S':>8} {'candidates ms':>14} {'ratio':>13} {'decode ms':>10} {'candidates':>11}")
    for size, (stage_ms, decode_ms, n) in res.items():
        print(f"{size:>8} {stage_ms:>14.3f} {stage_ms / base:>12.2f}x {decode_ms:>10.3f} {n:>11.0f}")


if __name__ == "__main__":
    main()
