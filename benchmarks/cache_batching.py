"""The result cache's Redis commands, one pipeline per event-loop turn vs one round trip each (same process).

    python benchmarks/cache_batching.py [--concurrency 16] [--waves 60] [--rounds 4] [--redis-url URL]

Runs the real pipeline in-process (``RecommendationService`` with local shard and ranker objects, the
result cache on, every request a miss: a lookup and a store each) in waves of ``--concurrency``
concurrent requests, alternating the cache's command path between :class:`LoopBatchedRedis` (what
serving uses) and a direct ``execute_command`` per command, and prints the CPU per request of each and
their ratio. Artifacts: the synthetic store of ``serve_overhead.py`` (``--store``, written when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class DirectCommands:
    """The baseline: each command its own round trip on the same client."""

    def __init__(self, client) -> None:
        self.client = client

    async def execute(self, *command):
        return await self.client.get().execute_command(*command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--waves", type=int, default=60, help="Waves per timed block.")
    ap.add_argument("--rounds", type=int, default=4, help="Alternating batched/direct blocks each.")
    ap.add_argument("--store", default=None, help="Synthetic artifacts (default: a temp dir, written once).")
    ap.add_argument("--redis-url", default=os.environ.get("RECSYS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    args = ap.parse_args()

    from serve_overhead import serving_args

    from recsys.serving.app import parse_args
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService

    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="recsys-cache-batching-"))
    if not (root / "items.parquet").exists():
        from http_load import write_synthetic_store

        write_synthetic_store(root, 4_000, 6_000, 64)
    cfg = parse_args({**serving_args(root, 2, args.redis_url),
                      "cache": {"key_prefix": f"recsys:rc-batching-{os.getpid()}-{time.time_ns()}"}})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, 2) for i in range(2)], Ranker(cfg))
    cache = svc.cache.cache
    paths = {"batched": cache._batched, "direct": DirectCommands(cache._aredis)}
    users = iter(range(10_000, 10_000_000))  # all distinct: every request misses, then stores

    async def wave() -> None:
        await asyncio.gather(*(svc.recommend(RecommendationRequest(user_id=next(users), n=10))
                               for _ in range(args.concurrency)))

    async def run() -> dict[str, list[float]]:
        await svc.start()
        for _ in range(20):
            await wave()  # warm-up
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(args.rounds):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                cache._batched = paths[name]
                t0 = time.process_time()
                for _ in range(args.waves):
                    await wave()
                cpu[name].append((time.process_time() - t0) / (args.waves * args.concurrency) * 1e3)
        cache._batched = paths["batched"]
        await svc.aclose()
        return cpu

    cpu = asyncio.run(run())
    b = paths["batched"]
    print(f"c={args.concurrency}, {args.rounds} x {args.waves} waves each, cache misses (a lookup + a store per "
          f"request); batched: {b.commands / max(b.pipelines, 1):.1f} commands per pipeline")
    for name, vals in cpu.items():
        print(f"  {name:8s} CPU per request (ms): median {statistics.median(vals):.3f}  "
              f"[{', '.join(f'{v:.3f}' for v in vals)}]")
    ratio = statistics.median(cpu["batched"]) / statistics.median(cpu["direct"])
    print(f"batched / direct CPU per request: {ratio:.2f}x")


if __name__ == "__main__":
    main()
