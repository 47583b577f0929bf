"""Load and soak test of the serving app on loopback: latency percentiles, throughput, errors, actor memory.

A bounded loop (stops at ``--duration`` seconds OR ``--max-requests``, whichever comes first;
loopback URLs only) with a realistic mix: recommendations (hot users repeated, 10 % cold users the
model never saw), similar-item lookups and event writes (which invalidate the writer's cached
results). Before and after, the RSS of every Ray Serve actor (replicas, proxy, controller) is read
with psutil via the Ray actor table.

Without ``--url`` it deploys its own app on the local Ray cluster from a generated small store
(``benchmarks/http_load.py``'s synthetic artifacts) twice: ``/`` with the Redis result cache and
``/nocache`` without, and prints the cached run's throughput as a ratio of the uncached baseline
measured in the same process.

    python benchmarks/load_soak.py                          # 30 s per app, concurrency 8
    python benchmarks/load_soak.py --soak-minutes 10        # soak: asserts actor RSS growth <= bound
    python benchmarks/load_soak.py --url http://127.0.0.1:8000 --api-key "$RECSYS_API_KEY"

Soak bound: after a warm-up window, no Serve actor's RSS may grow by more than
``max(--rss-growth-mb MiB, --rss-growth-pct % of its warm RSS)`` (default 64 MiB / 15 %) by the
end of the soak; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


SERVE_ACTORS = ("ServeReplica", "ServeController", "ProxyActor")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(root: Path, num_shards: int, redis_url: str, port: int, api_key_file: Path | None) -> str:
    """Start Ray + Serve here and deploy the cached app at / and the uncached baseline at /nocache."""
    import ray
    from ray import serve

    from recsys.serving.app import build_app

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"model_store_uri": str(root / "models"), "catalog_path": str(root / "items.parquet"),
            "num_shards": num_shards, "redis_url": redis_url, "exposure_log_dir": str(root / "exposures"),
            "exploration_rate": 0.1}
    if api_key_file is not None:
        args["security"] = {"api_key_file": str(api_key_file)}
    serve.run(build_app({**args, "cache": {"enabled": True, "key_prefix": f"bench:{port}"}}),
              name="recsys_soak", route_prefix="/", blocking=False)
    serve.run(build_app({**args, "cache": {"enabled": False}}), name="recsys_soak_nocache",
              route_prefix="/nocache", blocking=False)
    return f"http://127.0.0.1:{port}"


def connect_ray() -> bool:
    """Attach to the running cluster (for --url) so actor memory can be read; False if there is none."""
    import ray

    if ray.is_initialized():
        return True
    try:
        ray.init(address="auto", log_to_driver=False, configure_logging=False)
        return True
    except Exception as e:  # noqa: BLE001 - memory figures are optional against a foreign app
        print(f"(no Ray cluster to attach to, actor memory not reported: {type(e).__name__})")
        return False


def cache_counters(url: str) -> dict[str, float]:
    """Result-cache counters from the app's /metrics (one ingress replica's view)."""
    import httpx

    out = {"hits": 0.0, "misses": 0.0, "errors": 0.0}
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        for key in out:
            if line.startswith(f"recsys_cache_{key}_total "):
                out[key] = float(line.split()[-1])
    return out


def memory_table(before: dict[str, int], after: dict[str, int]) -> list[dict]:
    rows = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        rows.append({"actor": key, "before_mib": None if b is None else round(b / 2**20, 1),
                     "after_mib": None if a is None else round(a / 2**20, 1),
                     "growth_mib": None if a is None or b is None else round((a - b) / 2**20, 1)})
    return rows


def print_result(label: str, summary: dict, base_rps: float | None) -> None:
    ratio = f"  {summary['throughput_rps'] / base_rps:.2f}x baseline" if base_rps else ""
    print(f"{label:<12} requests={summary['requests']:>6}  {summary['throughput_rps']:>7.1f} req/s{ratio}  "
          f"p50={summary['p50_ms']:.1f} ms  p95={summary['p95_ms']:.1f} ms  p99={summary['p99_ms']:.1f} ms  "
          f"errors={summary['errors']} (events 503: {summary['events_unavailable']})  "
          f"degraded={summary['degraded']}  cached={summary['cached']}  status={summary['status']}", flush=True)
    for kind, s in summary["by_kind"].items():
        print(f"{'':<12}  {kind:<10} n={s['count']:>6}  p50={s['p50_ms']:.1f}  p95={s['p95_ms']:.1f}  "
              f"p99={s['p99_ms']:.1f} ms")


def main() -> int:
    from recsys.serving.tools.loadgen import LoadMix, actor_rss, check_loopback, run_load_sync

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="Target a running app on loopback instead of deploying one.")
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds per run (upper bound).")
    ap.add_argument("--max-requests", type=int, default=20_000, help="Requests per run (upper bound).")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="Soak: run this long, assert no memory growth.")
    ap.add_argument("--warmup", type=float, default=20.0, help="Seconds of load before the 'before' memory reading.")
    ap.add_argument("--rss-growth-mb", type=float, default=64.0)
    ap.add_argument("--rss-growth-pct", type=float, default=15.0)
    ap.add_argument("--items", type=int, default=4_000)
    ap.add_argument("--users", type=int, default=6_000, help="Known user ids are 1..users.")
    ap.add_argument("--num-shards", type=int, default=2)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--api-key", default=None, help="Key for /v1/events (default: $RECSYS_API_KEY when set).")
    ap.add_argument("--json", dest="json_out", default=None, help="Also write the results as JSON here.")
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    args = ap.parse_args()

    from http_load import wait_ready, write_synthetic_store

    api_key = args.api_key or os.environ.get("RECSYS_API_KEY") or None
    user_ids = list(range(1, args.users + 1))
    item_ids = list(range(1, args.items + 1))
    own_app = args.url is None
    if own_app:
        root = Path(tempfile.mkdtemp(prefix="recsys-soak-"))
        t0 = time.perf_counter()
        write_synthetic_store(root, args.items, args.users, 64)
        key_file = None
        if api_key is None:
            api_key = os.urandom(16).hex()
        key_file = root / "api-key"
        key_file.write_text(api_key)
        url = deploy(root, args.num_shards, args.redis_url, _free_port(), key_file)
        wait_ready(url, args.ready_timeout)
        wait_ready(f"{url}/nocache", args.ready_timeout)
        print(f"deployed 2 apps x {args.num_shards} shards ({args.items} items) in "
              f"{time.perf_counter() - t0:.1f}s at {url}")
        have_ray = True
    else:
        url = args.url.rstrip("/")
        check_loopback(url)
        wait_ready(url, 30)
        have_ray = connect_ray()

    mix = LoadMix()
    common = {"concurrency": args.concurrency, "user_ids": user_ids, "item_ids": item_ids, "mix": mix,
              "api_key": api_key}
    results: dict = {"command": " ".join(sys.argv), "concurrency": args.concurrency, "mix": vars(mix)}

    # warm-up (JIT/allocators/caches), then the 'before' memory reading
    run_load_sync(url, duration_s=args.warmup, max_requests=args.max_requests, seed=99, **common)
    before = actor_rss(SERVE_ACTORS) if have_ray else {}

    base_rps = None
    if own_app and not args.soak_minutes:
        base = run_load_sync(url, duration_s=args.duration, max_requests=args.max_requests, seed=1,
                             path_prefix="/nocache", **common).summary()
        print_result("no cache", base, None)
        base_rps = base["throughput_rps"] or None
        results["baseline_nocache"] = base

    if args.soak_minutes:
        total_s = args.soak_minutes * 60
        window = min(60.0, total_s)
        windows, t_end = [], time.perf_counter() + total_s
        i = 0
        while time.perf_counter() < t_end - 1:
            i += 1
            res = run_load_sync(url, duration_s=min(window, t_end - time.perf_counter()),
                                max_requests=args.max_requests, seed=100 + i, **common).summary()
            mem = actor_rss(SERVE_ACTORS) if have_ray else {}
            windows.append({"window": i, **{k: res[k] for k in ("requests", "throughput_rps", "errors", "p50_ms",
                                                                 "p95_ms", "p99_ms", "degraded")},
                            "rss_mib": {k: round(v / 2**20, 1) for k, v in mem.items()}})
            print_result(f"soak w{i}", res, None)
            growth = {k: (mem[k] - before[k]) / 2**20 for k in mem if k in before}
            if growth:
                worst = max(growth, key=growth.get)
                print(f"{'':<12}  rss: {len(mem)} Serve actors, {sum(mem.values()) / 2**20:.0f} MiB total, "
                      f"largest growth since warm-up {growth[worst]:+.1f} MiB ({worst})", flush=True)
        results["soak_windows"] = windows
        summary = None
    else:
        summary = run_load_sync(url, duration_s=args.duration, max_requests=args.max_requests, seed=1,
                                **common).summary()
        print_result("cache" if own_app else "run", summary, base_rps)
        results["run"] = summary
    counters = cache_counters(url)
    lookups = counters["hits"] + counters["misses"]
    results["cache_counters"] = counters
    print(f"result cache (ingress /metrics, whole run incl. warm-up): hits={counters['hits']:.0f} "
          f"misses={counters['misses']:.0f} errors={counters['errors']:.0f} "
          f"hit ratio={counters['hits'] / lookups if lookups else 0:.2f}")
    if summary is not None and base_rps:
        results["throughput_vs_nocache"] = round(summary["throughput_rps"] / base_rps, 2)

    after = actor_rss(SERVE_ACTORS) if have_ray else {}
    table = memory_table(before, after)
    results["actor_rss"] = table
    print(f"\n{'actor':<60}{'before MiB':>11}{'after MiB':>11}{'growth':>9}")
    for row in table:
        print(f"{row['actor'][:59]:<60}{row['before_mib'] or '-':>11}{row['after_mib'] or '-':>11}"
              f"{row['growth_mib'] if row['growth_mib'] is not None else '-':>9}")

    status = 0
    if args.soak_minutes:
        offenders = []
        for row in table:
            if row["before_mib"] is not None and row["after_mib"] is None:
                offenders.append(f"{row['actor']}: no reading at the end (actor died or was replaced)")
                continue
            if row["growth_mib"] is None:
                continue
            bound = max(args.rss_growth_mb, row["before_mib"] * args.rss_growth_pct / 100)
            if row["growth_mib"] > bound:
                offenders.append(f"{row['actor']}: +{row['growth_mib']} MiB > {bound:.0f} MiB")
        errors = sum(w["errors"] for w in results["soak_windows"])
        results["soak_ok"] = not offenders
        print(f"\nsoak {args.soak_minutes:g} min: {sum(w['requests'] for w in results['soak_windows'])} requests, "
              f"{errors} errors; bound per actor = max({args.rss_growth_mb:g} MiB, {args.rss_growth_pct:g}%)")
        if offenders:
            print("MEMORY GROWTH BEYOND BOUND:\n  " + "\n  ".join(offenders))
            status = 1
        else:
            print("no actor grew beyond the bound")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2, default=str))
    if own_app:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
