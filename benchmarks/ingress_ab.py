"""CPU per request of the ingress pipeline with one request-path mechanism on vs off, in one process.

    python benchmarks/ingress_ab.py --compare cache-batching|feature-batching|stage-yield [--concurrency 16]
                                    [--waves 60]
                                    [--rounds 4] [--store DIR] [--redis-url URL] [--known-users]

Runs the real pipeline in-process (``RecommendationService`` with local shard and ranker objects, the
result cache on, every request a miss: a cache lookup and a store each) in waves of ``--concurrency``
concurrent requests, alternating blocks with the mechanism on and off (the order flips every round),
and prints the median CPU per request of each and their ratio:

* ``cache-batching``: the result cache's commands through :class:`LoopBatchedRedis` (one pipeline per
  event-loop turn, what serving uses) vs one ``execute_command`` round trip each on the same client.
* ``feature-batching``: the online feature client's asyncio reads (the history stage's user row, once per
  request) through its :class:`LoopBatchedRedis` vs a pipeline of their own per request (the path before).
* ``stage-yield``: ``RecommendationService.yield_between_stages`` (``ServingConfig.stage_yield``: concurrent
  requests take each stage together) vs each request running from candidates to its response.

Artifacts: the synthetic store of ``serve_overhead.py`` (``--store``, written when missing).
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
    """The cache-batching baseline: each command its own round trip on the same client."""

    def __init__(self, client) -> None:
        self.client = client

    async def execute(self, *command):
        return await self.client.get().execute_command(*command)


class PipelinePerCall:
    """The feature-batching baseline: each caller's commands in a pipeline of their own."""

    def __init__(self, client) -> None:
        self.client = client

    async def execute_many(self, commands):
        async with self.client.get().pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute()


def switches(svc, compare: str):
    """(on, off) callables that set the compared mechanism on the service."""
    if compare == "cache-batching":
        cache = svc.cache.cache
        batched, direct = cache._batched, DirectCommands(cache._aredis)
        return (lambda: setattr(cache, "_batched", batched)), (lambda: setattr(cache, "_batched", direct))
    if compare == "feature-batching":
        client = svc.features._client  # OnlineFeatureClient
        batched, per_call = client._abatched, PipelinePerCall(client._aredis)
        return (lambda: setattr(client, "_abatched", batched)), (lambda: setattr(client, "_abatched", per_call))
    if compare == "stage-yield":
        return (lambda: setattr(svc, "yield_between_stages", True)), (lambda: setattr(svc, "yield_between_stages",
                                                                                       False))
    raise SystemExit(f"--compare {compare!r}: expected cache-batching, feature-batching or stage-yield")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", required=True, choices=["cache-batching", "feature-batching", "stage-yield"])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--waves", type=int, default=60, help="Waves per timed block.")
    ap.add_argument("--rounds", type=int, default=4, help="Blocks of each setting (alternating).")
    ap.add_argument("--store", default=None, help="Synthetic artifacts (default: a temp dir, written once).")
    ap.add_argument("--redis-url", default=os.environ.get("RECSYS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    ap.add_argument("--known-users", action="store_true",
                    help="Users the store knows (serve_overhead's stream: ranker and hydration run), each once; "
                         "default: unknown ids (the cold-start path).")
    args = ap.parse_args()

    from serve_overhead import serving_args

    from recsys.serving.app import parse_args
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService

    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="recsys-ingress-ab-"))
    if not (root / "items.parquet").exists():
        from http_load import write_synthetic_store

        write_synthetic_store(root, 4_000, 6_000, 64)
    cfg = parse_args({**serving_args(root, 2, args.redis_url),
                      "cache": {"key_prefix": f"recsys:rc-ab-{os.getpid()}-{time.time_ns()}"}})
    svc = RecommendationService(cfg, [RetrievalShard(cfg, i, 2) for i in range(2)], Ranker(cfg))
    on, off = switches(svc, args.compare)
    if args.known_users:  # each once: every request misses the cache, then stores
        from serve_overhead import UserStream

        users = iter(UserStream(6_000).users)
    else:
        users = iter(range(10_000, 10_000_000))  # all distinct: every request misses the cache, then stores

    async def wave() -> None:
        await asyncio.gather(*(svc.recommend(RecommendationRequest(user_id=next(users), n=10))
                               for _ in range(args.concurrency)))

    async def run() -> dict[str, list[float]]:
        await svc.start()
        for _ in range(20):
            await wave()  # warm-up
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(args.rounds):
            for name in (("on", "off") if r % 2 == 0 else ("off", "on")):
                (on if name == "on" else off)()
                t0 = time.process_time()
                for _ in range(args.waves):
                    await wave()
                cpu[name].append((time.process_time() - t0) / (args.waves * args.concurrency) * 1e3)
        on()
        await svc.aclose()
        return cpu

    cpu = asyncio.run(run())
    extra = ""
    if args.compare == "cache-batching":
        b = svc.cache.cache._batched
        extra = f"; {b.commands / max(b.pipelines, 1):.1f} commands per pipeline"
    if args.compare == "feature-batching":
        b = svc.features._client._abatched
        extra = f"; {b.commands / max(b.pipelines, 1):.1f} commands per batched pipeline"
    print(f"{args.compare}: c={args.concurrency}, {args.rounds} x {args.waves} waves per setting, cache misses{extra}")
    for name, vals in cpu.items():
        print(f"  {name:4s} CPU per request (ms): median {statistics.median(vals):.3f}  "
              f"[{', '.join(f'{v:.3f}' for v in vals)}]")
    print(f"on / off CPU per request: {statistics.median(cpu['on']) / statistics.median(cpu['off']):.2f}x")


if __name__ == "__main__":
    main()
