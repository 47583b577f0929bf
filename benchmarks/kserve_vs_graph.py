"""Ranking 500 candidates: the in-graph ranker (Serve handle) vs the KServe V2 predictor over HTTP.

The same TorchScript ranker version three ways, requests interleaved one by one (same inputs):

* in-process ``RankerCore.score`` (baseline: the model alone),
* ``Ranker`` as a Serve deployment, called through a deployment handle (what the ingress does),
* the KServe predictor (``python -m recsys.serving.deployments.kserve_predictor``, its own process) through
  :class:`recsys.serving.pipeline.scoring.kserve_client.KServeRankerClient` (V2 JSON over loopback HTTP) — the path
  taken when ``ranker_endpoint`` is set.

    python benchmarks/kserve_vs_graph.py [--candidates 500] [--requests 300] [--store DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _wait(url: str, timeout: float) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="Artifacts dir (built with the default catalog when empty).")
    ap.add_argument("--candidates", type=int, default=500)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--throughput-optimized", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1" if args.throughput_optimized else "0"

    from serve_overhead import _free_port

    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="recsys-kserve-bench-"))
    if not (root / "items.parquet").exists():
        from http_load import write_synthetic_store

        write_synthetic_store(root, 4_000, 6_000, 64)
    store_uri = str(root / "models")

    import ray
    from ray import serve

    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import BatchedRanker, RankerCore
    from recsys.serving.pipeline.scoring.kserve_client import KServeRankerClient

    cfg = ServingConfig(model_store_uri=store_uri)
    core = RankerCore(cfg)
    version = core.load(None)
    spec = core.spec(version)
    rng = np.random.default_rng(0)
    n = args.candidates
    dense = rng.normal(size=(n, len(spec.dense))).astype(np.float32)
    sparse = rng.integers(0, 1 << 16, size=(n, len(spec.sparse))).astype(np.int64)

    port = _free_port()
    pred = subprocess.Popen([sys.executable, "-m", "recsys.serving.deployments.kserve_predictor",
                             "--model_store_uri", store_uri, "--http_port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                           if k.startswith(("RAY_SERVE_", "PYTHONPATH"))} | {"OMP_NUM_THREADS": "1"}})
        serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
        handle = serve.run(serve.deployment(BatchedRanker).options(name="Ranker", max_ongoing_requests=64,
                                                                   ray_actor_options={"num_cpus": 0.25})
                           .bind(cfg.model_dump(mode="json")), name="ranker_only", route_prefix=None)
        _wait(f"http://127.0.0.1:{port}/v2/models/ranker/ready", 180)

        async def run() -> dict[str, list[float]]:
            client = KServeRankerClient(f"http://127.0.0.1:{port}")
            paths = {
                "in-process RankerCore": lambda: asyncio.to_thread(core.score, dense, sparse, version),
                "Serve handle (in-graph)": lambda: handle.score.remote(dense, sparse, version),
                "KServe V2 HTTP": lambda: client.score(dense, sparse, version),
            }
            for fn in paths.values():  # warm-up
                for _ in range(5):
                    await fn()
            ref = core.score(dense, sparse, version)
            np.testing.assert_allclose(await client.score(dense, sparse, version), ref, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(await handle.score.remote(dense, sparse, version), ref, rtol=1e-5, atol=1e-5)
            lat: dict[str, list[float]] = {k: [] for k in paths}
            names = list(paths)
            for i in range(args.requests):
                for name in names[i % 3:] + names[:i % 3]:  # rotate the order
                    t0 = time.perf_counter()
                    await paths[name]()
                    lat[name].append(time.perf_counter() - t0)
            await client.aclose()
            return lat

        lat = asyncio.run(run())
    finally:
        pred.terminate()
        pred.wait(15)
    base = float(np.percentile(lat["Serve handle (in-graph)"], 50))
    print(f"ranking {n} candidates ({len(spec.dense)} dense + {len(spec.sparse)} sparse columns), "
          f"{args.requests} interleaved requests each, throughput_optimized={args.throughput_optimized}")
    print(f"{'path':<26}{'p50 ms':>9}{'p99 ms':>9}{'vs in-graph':>13}")
    for name, xs in lat.items():
        a = np.asarray(xs) * 1e3
        print(f"{name:<26}{np.percentile(a, 50):>9.2f}{np.percentile(a, 99):>9.2f}"
              f"{np.percentile(a, 50) / (base * 1e3):>12.2f}x")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    ray.shutdown()  # not serve.shutdown(): the handle's router lived on asyncio.run's loop, closed by now


if __name__ == "__main__":
    main()
