"""Event ingestion throughput: POST /v1/events single and batched, next to the raw-Redis floor, no loss.

Three numbers from one run, same Redis, same keys:

* floor   - raw redis-py, pipelined: per event the XADD plus the counter / recent-list / cache-generation
            writes the consumer does, 100 events per round trip (no HTTP, no validation, no Lua);
* single  - ``POST /v1/events`` with one event per request, ``--concurrency`` clients;
* batched - ``POST /v1/events`` with a list of ``--batch`` events per request.

For each HTTP phase it then waits until the ingress replica's stream consumer has applied every
accepted event and checks count in == count applied (the overlay's click counters of the run's
users add up to the number of 202-acknowledged events). Bounded: each phase stops after
``--single-events`` / ``--batched-events`` events.

    python benchmarks/ingest.py                                   # deploy a small app on a local Ray, measure
    python benchmarks/ingest.py --url http://127.0.0.1:8000 --api-key "$KEY" --project recsys
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def floor(redis_url: str, n: int, project: str) -> float:
    """events/s of raw pipelined redis-py writes of the same keys (deleted afterwards)."""
    import redis

    from recsys.features.realtime import OverlayKeys

    r = redis.Redis.from_url(redis_url)
    keys = OverlayKeys(f"{project}_floor")
    today = int(time.time() // 86400)
    t0 = time.perf_counter()
    for start in range(0, n, 100):
        with r.pipeline(transaction=False) as p:
            for i in range(start, min(n, start + 100)):
                u, it = 1_000_000 + i % 500, i % 300
                p.xadd(keys.stream, {"e": f'{{"user_id":{u},"item_id":{it},"event_type":"click"}}'})
                for k in (keys.user(u), keys.item(it)):
                    p.hincrby(k, "c:clicks:all", 1)
                    p.hincrby(k, f"c:clicks:{today}", 1)
                p.lpush(keys.recent(u), f"{it}:{time.time()}")
                p.ltrim(keys.recent(u), 0, 19)
                p.incr(f"bench:floor:gen:{u}")
            p.execute()
    rate = n / (time.perf_counter() - t0)
    for k in [*r.scan_iter(match=f"{keys.prefix}:*", count=1000), *r.scan_iter(match="bench:floor:*", count=1000)]:
        r.delete(k)
    return rate


def read_cost(redis_url: str, project: str, reps: int = 60) -> tuple[float, float]:
    """p50 ms of one online read of 1 user + 500 items: Feast rows only vs rows + real-time overlay."""
    import numpy as np

    from recsys.features import FeatureStoreConfig
    from recsys.features.online import OnlineFeatureClient

    c = OnlineFeatureClient(FeatureStoreConfig(redis_url=redis_url, project=project, read_timeout_s=5))
    items = list(range(1, 501))
    uk, ik = [c.layout.key("user_id", 1)], [c.layout.key("item_id", i) for i in items]
    plain, overlay = [], []
    for _ in range(reps):  # interleaved, so load changes hit both alike
        t = time.perf_counter()
        c._hmget_all(uk, ik)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        c._hmget_all(uk, ik, overlay_users=[1], overlay_items=items)
        overlay.append(time.perf_counter() - t)
    return float(np.median(plain) * 1000), float(np.median(overlay) * 1000)


async def post_events(url: str, api_key: str, users: list[int], total: int, batch: int,
                      concurrency: int) -> tuple[int, int, float]:
    """(accepted, refused, seconds): ``total`` events in requests of ``batch``, ``concurrency`` at a time.

    aiohttp, as serve_overhead.py's load: the client shares the 2 cores with the server, and httpx
    costs about twice its CPU per request.
    """
    from collections import Counter

    import aiohttp

    sent = 0
    accepted = refused = 0
    statuses: Counter[int] = Counter()
    odd: list = []
    headers = {"X-API-Key": api_key} if api_key else {}

    def next_body() -> object | None:
        nonlocal sent
        if sent >= total:
            return None
        k = min(batch, total - sent)
        events = [{"user_id": users[(sent + j) % len(users)], "item_id": (sent + j) % 300, "event_type": "click"}
                  for j in range(k)]
        sent += k
        return events[0] if batch == 1 else events

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, refused
        while (body := next_body()) is not None:
            n = 1 if isinstance(body, dict) else len(body)
            async with session.post(f"{url}/v1/events", json=body, headers=headers) as r:
                statuses[r.status] += 1
                if r.status == 202:
                    got = await r.json(content_type=None)
                    accepted += got["accepted"]
                    if got["accepted"] != n:
                        odd.append((n, got))
                else:
                    await r.read()
                    refused += n

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        secs = time.perf_counter() - t0
    print(f"  {total} events in requests of {batch}: HTTP statuses {dict(statuses)}; odd {len(odd)} {odd[:3]}",
          flush=True)
    return accepted, refused, secs


def applied(redis_url: str, project: str, users: list[int], expected: int, timeout: float) -> tuple[int, float]:
    """(clicks counted in the overlay of ``users``, seconds waited) once it reaches ``expected`` or times out."""
    import redis

    from recsys.features.realtime import OverlayKeys

    r = redis.Redis.from_url(redis_url)
    keys = OverlayKeys(project)
    t0 = time.perf_counter()
    while True:
        with r.pipeline(transaction=False) as p:
            for u in users:
                p.hget(keys.user(u), "c:clicks:all")
            got = sum(int(x or 0) for x in p.execute())
        if got >= expected or time.perf_counter() - t0 > timeout:
            return got, time.perf_counter() - t0
        time.sleep(0.05)


def deploy(root: Path, redis_url: str, project: str, api_key: str, port: int) -> str:
    import ray
    from http_load import wait_ready, write_synthetic_store
    from ray import serve

    from recsys.serving.app import build_app

    write_synthetic_store(root, n_items=300, n_users=500, dim=16)
    key_file = root / "api-key"
    key_file.write_text(api_key)
    env = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", **env}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"model_store_uri": str(root / "models"), "catalog_path": str(root / "items.parquet"), "num_shards": 1,
            "redis_url": redis_url, "feature_project": project, "exposure_log_dir": str(root / "exposures"),
            "security": {"api_key_file": str(key_file)}}
    serve.run(build_app(args), name="recsys_ingest_bench", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, 300)
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="A running app (default: deploy one on a local Ray cluster)")
    ap.add_argument("--api-key", default=os.environ.get("RECSYS_API_KEY", ""))
    ap.add_argument("--redis-url", default=os.environ.get("RECSYS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--project", default=None, help="Feature project of --url's app (default recsys)")
    ap.add_argument("--single-events", type=int, default=2000)
    ap.add_argument("--batched-events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=100, help="Events per batched request (<= 1000)")
    ap.add_argument("--concurrency", type=int, default=32, help="Clients posting single events")
    ap.add_argument("--batch-concurrency", type=int, default=4, help="Clients posting batches")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--throughput-optimized", action=argparse.BooleanOptionalAction, default=True,
                    help="RAY_SERVE_THROUGHPUT_OPTIMIZED (on by default, as `recsys serve start` runs it)")
    ap.add_argument("--haproxy", action="store_true",
                    help="RAY_SERVE_ENABLE_HA_PROXY=1 (needs `haproxy`; what `recsys serve start` uses for a "
                         "network-facing --host when installed; the app here listens on loopback)")
    a = ap.parse_args()
    if a.url is None:  # read when Serve starts: set before the local cluster is created
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1" if a.throughput_optimized else "0"
        import shutil

        if a.haproxy and shutil.which("haproxy") is None:
            raise SystemExit("--haproxy: no `haproxy` binary on PATH (Debian: apt-get install haproxy)")
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if a.haproxy else "0"

    project = a.project or ("recsys" if a.url else f"bench{uuid.uuid4().hex[:6]}")
    tmp = None
    url = a.url
    api_key = a.api_key
    if url is None:
        api_key = api_key or uuid.uuid4().hex
        tmp = tempfile.TemporaryDirectory(prefix="ingest_bench_")
        print("deploying a small app on a local Ray cluster ...", flush=True)
        url = deploy(Path(tmp.name), a.redis_url, project, api_key, a.port)
    try:
        load = os.getloadavg()[0]
        fl = floor(a.redis_url, 20_000, project)
        read_plain, read_overlay = read_cost(a.redis_url, project)
        base = 10**12 + uuid.uuid4().int % 10**9
        rows = []
        for name, total, batch, conc in (("single", a.single_events, 1, a.concurrency),
                                          ("batched", a.batched_events, a.batch, a.batch_concurrency)):
            users = [base + len(rows) * 1000 + i for i in range(500)]
            ok, refused, secs = asyncio.run(post_events(url, api_key, users, total, batch, conc))
            got, waited = applied(a.redis_url, project, users, ok, timeout=60)
            rows.append((name, ok, refused, ok / secs, got, waited))
        mode = (f"throughput_optimized={os.environ.get('RAY_SERVE_THROUGHPUT_OPTIMIZED', '?')} "
                f"haproxy={os.environ.get('RAY_SERVE_ENABLE_HA_PROXY', '0')}") if a.url is None else a.url
        print(f"\nevent ingestion, same run (1-min load average at start: {load:.1f} on {os.cpu_count()} cores; "
              f"{mode})")
        print(f"{'path':<40}{'events/s':>10}{'vs floor':>10}   count in -> applied")
        print(f"{'floor: raw redis-py pipeline':<40}{fl:>10.0f}{1.0:>10.3f}")
        for name, ok, refused, rate, got, waited in rows:
            label = f"POST /v1/events {name}" + (f" ({a.batch}/request)" if name == "batched" else "")
            loss = "OK" if got == ok else "LOSS"
            print(f"{label:<40}{rate:>10.0f}{rate / fl:>10.3f}   {ok} -> {got} {loss} "
                  f"(+{waited:.1f}s to apply; {refused} refused)")
        print(f"online read, 1 user + 500 items (p50): Feast rows {read_plain:.1f} ms, rows + overlay "
              f"{read_overlay:.1f} ms (x{read_overlay / read_plain:.2f})")
    finally:
        if tmp is not None:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
            tmp.cleanup()
            from recsys.features import FeatureStoreConfig
            from recsys.features.online import delete_project_keys

            delete_project_keys(FeatureStoreConfig(redis_url=a.redis_url, project=project))


if __name__ == "__main__":
    main()
