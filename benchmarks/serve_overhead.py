"""Our serving graph vs a no-op graph of the same shape, on one Ray cluster behind one proxy.

Why: on a small box most of a request's latency is the framework (HTTP proxy, handle hops,
serialization), not our code. A no-op application with *our* topology and deployment options
(FastAPI ingress -> ``num_shards`` retrieval shards scatter-gather -> ``@serve.batch`` ranker,
every stage answering at once with the same payload types) is the floor; the ratios ours / no-op
say how much of each request is our own work. The no-op calls each shard once per request; ours folds
the queries of concurrent requests into one call per shard (``ShardClient``), so under load ours makes
fewer hops than the floor it is compared with (the CPU-per-request lines show both). Both apps run side
by side and requests are interleaved, so load from other processes hits both alike:

* c = 1: for each user, one request to each app, the order alternating from user to user;
* c = 8, c = 32: back-to-back blocks (``--block-seconds`` or ``--block-requests``, whichever first)
  alternating ours/no-op, ``--rounds`` times each.

Then the pipeline alone: the same stages called in-process (no Ray, local shard/ranker objects),
p50 for one request (~500 candidates). Everything on loopback; bounded request counts.

    python benchmarks/serve_overhead.py                          # both ingress modes, default catalog (4,000 items)
    python benchmarks/serve_overhead.py --ingress proxy          # Serve's proxy only
    python benchmarks/serve_overhead.py --catalog 1m             # 1,000,000 items (IVF-PQ shards)
    python benchmarks/serve_overhead.py --no-throughput-optimized
    python benchmarks/serve_overhead.py --haproxy                # = --ingress haproxy (Debian's haproxy on PATH)

``RAY_SERVE_THROUGHPUT_OPTIMIZED`` / ``RAY_SERVE_ENABLE_HA_PROXY`` are read when Ray Serve starts, so
each ingress mode runs in a child process of its own (a fresh local cluster each, one after the other,
same store and users); the parent prints one summary: the ratios of both modes, each alternating round's
req/s ratio as min-max (``rounds``: the same code moves by up to 0.15 between runs minutes apart on a 2-core
box, so a run's own spread says how much one figure can be trusted), **requests/s per core**
(ours at c = 32 over this machine's cores, the load generator included on them) and the capacity line
(cores for 1M requests/s at that rate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # http_load's synthetic store builder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------- no-op graph
NOOP_CANDIDATES = 500
"""Rows of the ranker payload the no-op ingress sends (ours merges up to 500 candidates per request)."""


class NoopShard:
    """Answers ``search`` at once with arrays of the shape a real shard returns."""

    def __init__(self, cfg: dict, shard_id: int, num_shards: int):
        k = int(cfg["retrieval_k"])
        self._rows = np.arange(shard_id, shard_id + k * num_shards, num_shards, dtype=np.int64)[None, :]
        self._scores = np.linspace(1.0, 0.0, k, dtype=np.float32)[None, :]

    async def search(self, queries: np.ndarray, k: int, version: str) -> tuple[np.ndarray, np.ndarray]:
        return self._rows[:, :k], self._scores[:, :k]

    async def check_health(self) -> None:
        return None


class LocalNoopRanker:
    """The no-op ranker in the ingress process (``stages.ranking.placement: local``)."""

    async def score(self, dense: np.ndarray, sparse: np.ndarray, version: str) -> np.ndarray:
        return np.zeros(len(dense), np.float32)


def _noop_ranker_cls():
    from ray import serve

    from recsys.serving.deployments.ranker import RANKER_BATCH_WAIT_S, RANKER_MAX_BATCH

    class NoopRanker:
        """Same ``score`` signature and ``@serve.batch`` settings as :class:`BatchedRanker`; returns zeros."""

        def __init__(self, cfg: dict):
            self.cfg = cfg

        async def score(self, dense: np.ndarray, sparse: np.ndarray, version: str) -> np.ndarray:
            return await self._score_one((dense, sparse, version))

        @serve.batch(max_batch_size=RANKER_MAX_BATCH, batch_wait_timeout_s=RANKER_BATCH_WAIT_S)
        async def _score_one(self, requests: list[tuple[np.ndarray, np.ndarray, str]]) -> list[np.ndarray]:
            return [np.zeros(len(d), np.float32) for d, _, _ in requests]

    return NoopRanker


def _noop_ingress_cls():
    from ray import serve

    @serve.ingress()
    class NoopIngress:
        """FastAPI app with our request/response models; scatters to the shards, then the ranker."""

        def __init__(self, cfg: dict, shards: list[Any] | None, ranker: Any | None):
            from recsys.serving.pipeline.state import Target

            # stages placed `local` (cfg.stages) are plain objects in this process, as in ours
            self.shards = [Target.wrap(s) for s in (shards or [NoopShard(cfg, 0, 1)])]
            self.ranker = Target.wrap(ranker or LocalNoopRanker())
            self.k = int(cfg["retrieval_k"])
            self.vec = np.ones((1, 64), np.float32) / 8.0
            self.dense = np.zeros((NOOP_CANDIDATES, 3), np.float32)
            self.sparse = np.zeros((NOOP_CANDIDATES, 1), np.int64)

        def __serve_build_asgi_app__(self):
            from fastapi import FastAPI

            from recsys.serving.http.schemas import RecommendationRequest, RecommendationResponse, RecommendedItem

            app = FastAPI()

            async def recommend(body):
                await asyncio.gather(*(s.call("search", self.vec, self.k, "v1") for s in self.shards))
                await self.ranker.call("score", self.dense, self.sparse, "v1")
                items = [RecommendedItem(item_id=i + 1, score=1.0 - i / 100, rank=i, sources=["ann"], genres=[])
                         for i in range(body.n)]
                return RecommendationResponse(request_id="noop", user_id=body.user_id, items=items,
                                              model_versions={"retrieval": "v1"}, degraded=False,
                                              degraded_reasons=[], cold_start=False)

            # real classes, not the strings `from __future__ import annotations` would leave for FastAPI
            recommend.__annotations__ = {"body": RecommendationRequest, "return": RecommendationResponse}
            app.post("/v1/recommendations", response_model=RecommendationResponse)(recommend)

            @app.get("/readyz")
            async def readyz() -> dict:
                return {"ready": True}

            return app

    return NoopIngress


# ---------------------------------------------------------------------------------------- deployment
def serving_args(root: Path, num_shards: int, redis_url: str, retrieval_k: int = 400,
                 ranking: str = "local", retrieval: str = "deployment") -> dict:
    """Our app's args: ANN retrieval_k + item-kNN + popularity 100: ~500 candidates per request by default."""
    return {"model_store_uri": str(root / "models"), "catalog_path": str(root / "items.parquet"),
            "num_shards": num_shards, "redis_url": redis_url, "exposure_log_dir": str(root / "exposures"),
            "exploration_rate": 0.1, "exploration_seed": 0, "retrieval_k": retrieval_k,
            "stages": {"ranking": {"placement": ranking}, "retrieval": {"placement": retrieval}}}


def deploy_apps(args: dict, port: int, extra: dict[str, dict] | None = None) -> dict[str, str]:
    """Ours and the no-op (same options) on one fresh local cluster behind one proxy, + ``extra`` variants of ours."""
    import ray
    from ray import serve

    from recsys.serving.app import build_app, build_graph, parse_args

    env = {k: v for k, v in os.environ.items() if k.startswith(("RAY_SERVE_", "PYTHONPATH", "OMP_", "RECSYS_"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = parse_args(args)
    base = f"http://127.0.0.1:{port}"
    serve.run(build_app(cfg), name="ours", route_prefix="/ours", blocking=False)
    serve.run(build_graph(cfg, _noop_ingress_cls(), NoopShard, _noop_ranker_cls()), name="noop",
              route_prefix="/noop", blocking=False)
    urls = {"ours": f"{base}/ours", "noop": f"{base}/noop"}
    for name, variant in (extra or {}).items():
        serve.run(build_app(parse_args(variant)), name=name, route_prefix=f"/{name}", blocking=False)
        urls[name] = f"{base}/{name}"
    return urls


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


# ---------------------------------------------------------------------------------------- load
class Tally:
    """Latencies (s), wall time and outcomes of one app over all its blocks."""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.wall = 0.0
        self.errors = 0
        self.cached = 0
        self.degraded = 0
        self.first_error: str | None = None
        self.block_rps: list[float] = []  # answered requests/s of each timed block, in order

    def summary(self) -> dict[str, float]:
        a = np.asarray(self.lat) * 1e3
        return {"n": len(a), "p50": float(np.percentile(a, 50)) if len(a) else float("nan"),
                "p99": float(np.percentile(a, 99)) if len(a) else float("nan"),
                "rps": len(a) / self.wall if self.wall else float("nan"), "errors": self.errors,
                "cached": self.cached, "degraded": self.degraded, "block_rps": list(self.block_rps)}


class UserStream:
    """Users in a fixed shuffled order (known ids, 10 % cold ids), never repeating before the list ends.

    Both apps get the same sequence; each user appears once per app until wrap-around, so the
    result cache of ours (per user, 60 s) is missed, and any hit is counted and printed.
    """

    def __init__(self, n_users: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        users = rng.permutation(np.arange(1, n_users + 1))
        cold = rng.random(n_users) < 0.1
        users[cold] = 10**9 + np.arange(int(cold.sum()))
        self.users = users.tolist()

    def slice(self, start: int, n: int) -> list[int]:
        return [self.users[(start + i) % len(self.users)] for i in range(n)]


async def _post(session, url: str, user: int, n: int, tally: Tally) -> None:
    import aiohttp

    t0 = time.perf_counter()
    try:
        async with session.post(f"{url}/v1/recommendations", json={"user_id": user, "n": n}) as r:
            body = await r.json(content_type=None)
            ok = r.status == 200
    except (TimeoutError, aiohttp.ClientError, ValueError) as e:
        ok, body = False, {"error": repr(e)}
    if ok:
        tally.lat.append(time.perf_counter() - t0)
        tally.cached += bool(body.get("cached"))
        tally.degraded += bool(body.get("degraded"))
    else:
        tally.errors += 1
        tally.first_error = tally.first_error or str(body)[:300]


def _rotated(names: list[str], i: int) -> list[str]:
    """Alternate the order from one step to the next (reversed for two apps, rotated for more)."""
    if len(names) == 2:
        return names if i % 2 == 0 else names[::-1]
    k = i % len(names)
    return names[k:] + names[:k]


async def interleaved_c1(urls: dict[str, str], users: list[int], n: int) -> dict[str, Tally]:
    import aiohttp

    tallies = {name: Tally() for name in urls}
    names = list(urls)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2),
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        for i, user in enumerate(users):
            for name in _rotated(names, i):
                t0 = time.perf_counter()
                await _post(session, urls[name], user, n, tallies[name])
                tallies[name].wall += time.perf_counter() - t0
    return tallies


async def block(session, url: str, users: list[int], concurrency: int, seconds: float, n: int,
                tally: Tally) -> int:
    """``concurrency`` workers over ``users`` until they run out or ``seconds`` pass; returns requests sent."""
    it = iter(users)
    deadline = time.perf_counter() + seconds
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            user = next(it, None)
            if user is None:
                return
            sent += 1
            await _post(session, url, user, n, tally)

    t0, answered = time.perf_counter(), len(tally.lat)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    tally.wall += wall
    tally.block_rps.append((len(tally.lat) - answered) / wall if wall else float("nan"))
    return sent


async def interleaved_blocks(urls: dict[str, str], stream: UserStream, start: int, concurrency: int, rounds: int,
                             seconds: float, max_requests: int, n: int) -> tuple[dict[str, Tally], int]:
    import aiohttp

    tallies = {name: Tally() for name in urls}
    names = list(urls)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        for r in range(rounds):
            users = stream.slice(start, max_requests)
            used = 0
            for name in _rotated(names, r):
                used = max(used, await block(session, urls[name], users, concurrency, seconds, n, tallies[name]))
            start += used
    return tallies, start


# ---------------------------------------------------------------------------------------- in-process
WARMUP_USERS = 50
"""Untimed requests first: a server runs for hours, so the steady state (item-feature cache filled for the
catalog's hot items, code paths warmed) is what is measured, not the first requests after a deploy."""


def inprocess_pipeline(args: dict, users: list[int], n: int) -> dict[str, float]:
    """``RecommendationService.recommend`` with in-process shard/ranker objects (no Ray, no HTTP).

    The result cache is off (every request runs every stage). Wall time is what a request waits
    (Redis round trips included); CPU time (``process_time``,
    all threads of this process) is the pipeline's own compute, which other load on a shared box
    inflates far less than wall time.
    """
    from recsys.serving.app import parse_args
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.schemas import RecommendationRequest
    from recsys.serving.pipeline.service import RecommendationService

    cfg = parse_args({**args, "cache": {"enabled": False}})  # every request computed (no result-cache hits)
    shards = [RetrievalShard(cfg, i, cfg.num_shards) for i in range(cfg.num_shards)]
    service = RecommendationService(cfg, shards, Ranker(cfg))

    async def run() -> tuple[list[float], list[float], int]:
        t0 = time.perf_counter()
        await service.start()
        if service.hydration.snapshot.enabled:
            print(f"  item-feature snapshot: start() took {time.perf_counter() - t0:.1f} s "
                  f"({len(service.catalog.index):,} items; one background pass every "
                  f"{service.hydration.snapshot.period_s():.0f} s; "
                  f"{service.features.item_cache.nbytes / 2**20:.0f} MiB of decoded columns)", flush=True)
        for u in users[-WARMUP_USERS:]:  # warm-up (its users are not timed)
            await service.recommend(RecommendationRequest(user_id=u, n=n))
        wall, cpu, degraded = [], [], 0
        for u in users[:-WARMUP_USERS]:
            t0, c0 = time.perf_counter(), time.process_time()
            res = await service.recommend(RecommendationRequest(user_id=u, n=n))
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            degraded += res.degraded
        return wall, cpu, degraded

    wall, cpu, degraded = asyncio.run(run())
    hist = {s.name: s.value for m in service.metrics.candidates.collect() for s in m.samples}
    a, c = np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "cpu_p50": float(np.percentile(c, 50)), "degraded": degraded,
            "candidates": hist.get("recsys_candidates_sum", 0) / max(hist.get("recsys_candidates_count", 1), 1)}


# ---------------------------------------------------------------------------------------- main
INGRESS_MODES = ("proxy", "haproxy")
"""Serve's own HTTP proxy, or HAProxy in front of the ingress replicas (RAY_SERVE_ENABLE_HA_PROXY=1)."""


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _fmt_row(label: str, ours: dict, noop: dict) -> str:
    return (f"{label:<6}{ours['n']:>6}{noop['n']:>6}{ours['p50']:>9.1f}{noop['p50']:>9.1f}"
            f"{_ratio(ours['p50'], noop['p50']):>7.2f}x{ours['p99']:>9.1f}{noop['p99']:>9.1f}"
            f"{ours['rps']:>8.1f}{noop['rps']:>8.1f}{_ratio(ours['rps'], noop['rps']):>7.2f}x"
            f"{ours['errors'] + noop['errors']:>5}{ours['cached']:>5}{ours['degraded']:>5}")


def ingress_pid(app: str) -> int:
    """PID of the Ingress replica of ``app``: Ray titles worker processes ``ray::ServeReplica:<app>:<name>``."""
    import psutil

    for p in psutil.process_iter(["pid", "cmdline"]):
        if f"ServeReplica:{app}:Ingress" in " ".join(p.info["cmdline"] or []):
            return int(p.info["pid"])
    raise SystemExit(f"no Ingress replica process of {app!r} found")


def replica_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of every Serve replica, the proxy and redis-server, by role.

    Roles: ``<app>:<deployment>`` for replicas (Ray titles them ``ray::ServeReplica:<app>:<name>``),
    ``proxy`` and ``redis``. The difference of two snapshots divided by the requests served says where
    each request's CPU goes, which the latency ratios alone cannot.
    """
    import psutil

    out: dict[str, float] = {}
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ServeReplica:" in cmd:
            role = cmd.split("ServeReplica:", 1)[1].split()[0]
        elif "ProxyActor" in cmd:
            role = "proxy"
        elif (p.info["name"] or "").startswith("redis-server"):
            role = "redis"
        else:
            continue
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def _report_cpu(before: dict[str, float], after: dict[str, float], requests: dict[str, int]) -> None:
    """CPU ms per request by process role (shared roles divided by all requests of the phase)."""
    total = sum(requests.values())
    parts = []
    for role in sorted(after):
        used = after[role] - before.get(role, 0.0)
        app = role.split(":", 1)[0]
        n = requests.get(app, total) if ":" in role else total
        if n and used > 0.005:
            parts.append(f"{role} {used / n * 1e3:.2f}")
    print("       CPU ms/request: " + ", ".join(parts) + "  (proxy/redis: over both apps' requests)", flush=True)


def start_py_spy(out: str, app: str, seconds: float):
    """``py-spy record`` of the ingress replica (sampling, 100 Hz, idle frames dropped) into a flame graph."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "-p", str(ingress_pid(app)), "-o", out, "-d", str(int(seconds)), "-r", "100",
           "--nonblocking"] + (["--format", "raw"] if out.endswith(".txt") else [])  # .txt: collapsed stacks
    print("profiling:", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _report(label: str, tallies: dict[str, Tally]) -> None:
    noop = tallies["noop"].summary()
    for name, t in tallies.items():
        if name != "noop":
            print(_fmt_row(label if name == "ours" else f"{label} {name}", t.summary(), noop), flush=True)
    for name, t in tallies.items():
        if t.first_error:
            print(f"       first error of {name}: {t.first_error}", flush=True)


def parse_cli() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", choices=["default", "1m"], default="default")
    ap.add_argument("--store", default=None,
                    help="Artifacts dir: reused when it holds a previous run's store, else built there.")
    ap.add_argument("--num-shards", type=int, default=2)
    ap.add_argument("--users", type=int, default=6000)
    ap.add_argument("--retrieval-k", type=int, default=400,
                    help="ANN candidates (+ kNN of the history + 100 popularity): ~500 per request.")
    ap.add_argument("--ranking-placement", choices=["local", "deployment"], default="local",
                    help="stages.ranking.placement, for ours and the no-op alike.")
    ap.add_argument("--also-ranking-deployment", action="store_true",
                    help="Also deploy ours with stages.ranking.placement=deployment (app 'rankdep'), interleaved.")
    ap.add_argument("--retrieval-placement", choices=["local", "deployment"], default="deployment",
                    help="stages.retrieval.placement (local needs --num-shards 1).")
    ap.add_argument("--ingress-replicas", type=int, default=None,
                    help="Ingress replicas of both apps (default: ServingConfig's, 1).")
    ap.add_argument("--also-variant", action="append", default=[], metavar="NAME=JSON",
                    help="Also deploy ours with these ServingConfig overrides as app NAME, interleaved (repeatable), "
                         'e.g. nocache=\'{"cache": {"enabled": false}}\'.')
    ap.add_argument("--redis-url", default=os.environ.get("RECSYS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    ap.add_argument("--throughput-optimized", action=argparse.BooleanOptionalAction, default=True,
                    help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (direct gRPC between replicas).")
    ap.add_argument("--ingress", default="proxy,haproxy",
                    help="Ingress modes, comma-separated, each in its own child process and cluster: proxy (Serve's "
                         "HTTP proxy) and/or haproxy (RAY_SERVE_ENABLE_HA_PROXY=1, needs `haproxy`).")
    ap.add_argument("--haproxy", action="store_true", help="Same as --ingress haproxy.")
    ap.add_argument("--json-out", default=None, help=argparse.SUPPRESS)  # a child's figures, for the parent
    ap.add_argument("--c1-requests", type=int, default=150, help="Users at c=1 (one request per app each).")
    ap.add_argument("--concurrency", default="8,32")
    ap.add_argument("--rounds", type=int, default=4, help="Alternating ours/no-op blocks per app and level.")
    ap.add_argument("--block-seconds", type=float, default=4.0)
    ap.add_argument("--block-requests", type=int, default=300)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--inprocess-requests", type=int, default=250,
                    help=f"Users for the in-process pipeline (the last {WARMUP_USERS} warm up); 0 skips it.")
    ap.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True, help="--no-serve: in-process only")
    ap.add_argument("--py-spy", default=None, metavar="SVG",
                    help="Record the ingress replica of ours with py-spy during the c=8 phase into this flame graph "
                         "(.svg), or as collapsed stacks (.txt).")
    ap.add_argument("--py-spy-app", default="ours", help="Whose ingress replica --py-spy records (ours | noop).")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    args = ap.parse_args()
    args.modes = ["haproxy"] if args.haproxy else [m for m in args.ingress.split(",") if m]
    if not args.modes or set(args.modes) - set(INGRESS_MODES):
        ap.error(f"--ingress: expected a comma-separated subset of {','.join(INGRESS_MODES)}")
    if "haproxy" in args.modes and shutil.which("haproxy") is None:
        ap.error("--ingress haproxy: no `haproxy` binary on PATH (Debian: apt-get install haproxy; scripts/setup.sh)")
    return args


def run_mode(args: argparse.Namespace, root: Path, mode: str) -> dict[str, dict[str, dict]]:
    """Deploy ours + no-op with ingress ``mode`` (this process's env), run the load, return figures per level."""
    sargs = serving_args(root, args.num_shards, args.redis_url, args.retrieval_k, args.ranking_placement,
                         args.retrieval_placement)
    # a result-cache namespace of this run and mode: users repeat across modes, answers must not be cached hits
    sargs["cache"] = {"key_prefix": f"recsys:rc-bench-{mode}-{os.getpid()}"}
    if args.ingress_replicas:
        sargs["ingress_replicas"] = args.ingress_replicas
    stream = UserStream(args.users)
    t0 = time.perf_counter()
    extra = {}
    if args.also_ranking_deployment:  # same run: is the in-ingress ranker really cheaper than the Ranker deployment?
        extra["rankdep"] = {**sargs, "stages": {**sargs["stages"], "ranking": {"placement": "deployment"}},
                            "cache": {"key_prefix": f"recsys:rc-rankdep-{os.getpid()}"}}
    for spec in args.also_variant:
        name, _, overrides = spec.partition("=")
        if not name.isidentifier() or name in ("ours", "noop") or not overrides:
            raise SystemExit(f"--also-variant {spec!r}: expected NAME=JSON with a new app name")
        extra[name] = {**sargs, "cache": {"key_prefix": f"recsys:rc-{name}-{os.getpid()}"}, **json.loads(overrides)}
    urls = deploy_apps(sargs, _free_port(), extra)
    for url in urls.values():
        wait_ready(url, args.ready_timeout)
    print(f"[{mode}] deployed ours + no-op ({args.num_shards} shards each) in {time.perf_counter() - t0:.1f}s; "
          f"throughput_optimized={args.throughput_optimized} ingress={mode} "
          f"ranking={args.ranking_placement} retrieval={args.retrieval_placement}", flush=True)
    asyncio.run(interleaved_c1(urls, stream.slice(len(stream.users) - WARMUP_USERS, WARMUP_USERS), args.n))  # warm-up

    print(f"{'conc':<6}{'n ours':>6}{'noop':>6}{'p50 ours':>9}{'noop':>9}{'ratio':>8}{'p99 ours':>9}{'noop':>9}"
          f"{'rps ours':>8}{'noop':>8}{'ratio':>8}{'err':>5}{'hit':>5}{'degr':>5}")
    start = args.inprocess_requests
    figures: dict[str, dict[str, dict]] = {}
    cpu0 = replica_cpu_seconds()
    tallies = asyncio.run(interleaved_c1(urls, stream.slice(start, args.c1_requests), args.n))
    start += args.c1_requests
    _report("1", tallies)
    _report_cpu(cpu0, replica_cpu_seconds(), {k: len(t.lat) for k, t in tallies.items()})
    figures["1"] = {k: t.summary() for k, t in tallies.items()}
    for c in (int(v) for v in args.concurrency.split(",") if v):
        spy = None
        if args.py_spy and c == 8:
            spy = start_py_spy(args.py_spy, args.py_spy_app, args.rounds * len(urls) * args.block_seconds)
        cpu0 = replica_cpu_seconds()
        tallies, start = asyncio.run(interleaved_blocks(urls, stream, start, c, args.rounds, args.block_seconds,
                                                        args.block_requests, args.n))
        _report(str(c), tallies)
        _report_cpu(cpu0, replica_cpu_seconds(), {k: len(t.lat) for k, t in tallies.items()})
        figures[str(c)] = {k: t.summary() for k, t in tallies.items()}
        if spy is not None:
            _, err = spy.communicate(timeout=120)
            why = f": {err.decode()[-300:]}" if spy.returncode else ""
            print(f"flame graph: {args.py_spy} (py-spy exit {spy.returncode}{why})", flush=True)
    from ray import serve

    serve.shutdown()
    import ray

    ray.shutdown()
    return figures


def per_core(rps: float) -> tuple[float, int]:
    """(requests/s per core of this machine, cores for 1M requests/s at that rate)."""
    pc = rps / (os.cpu_count() or 1)
    return pc, (math.ceil(1e6 / pc) if pc > 0 else 0)


def round_ratios(ours: dict, noop: dict) -> str:
    """The req/s ratio of each alternating round (ours' block r over the no-op's block r) as "min-max": how far
    the run's own ratio could move on the box's minute-to-minute state (no blocks at c = 1: "-")."""
    pairs = [_ratio(a, b) for a, b in zip(ours.get("block_rps") or [], noop.get("block_rps") or [], strict=False)]
    pairs = [r for r in pairs if math.isfinite(r)]
    return f"{min(pairs):.2f}-{max(pairs):.2f}" if pairs else "-"


def summarize(results: dict[str, dict[str, dict[str, dict]]]) -> None:
    """One table over the ingress modes: p50 and req/s ratios (with each round's ratio, min-max), requests/s
    per core, cores for 1M requests/s."""
    cores = os.cpu_count() or 1
    print(f"\nsummary ({cores} cores, shared with the load generator, Ray, Redis; ratio = ours / no-op, same run)")
    print(f"{'ingress':<9}{'c':>3}{'p50 ours':>9}{'noop':>7}{'ratio':>7}{'rps ours':>9}{'noop':>7}{'ratio':>7}"
          f"{'rounds':>11}{'rps/core ours':>14}{'noop':>7}{'cores for 1M rps (ours)':>25}")
    for mode, levels in results.items():
        for c, apps in levels.items():
            o, n = apps["ours"], apps["noop"]
            pc, need = per_core(o["rps"])
            print(f"{mode:<9}{c:>3}{o['p50']:>9.1f}{n['p50']:>7.1f}{_ratio(o['p50'], n['p50']):>6.2f}x"
                  f"{o['rps']:>9.1f}{n['rps']:>7.1f}{_ratio(o['rps'], n['rps']):>6.2f}x{round_ratios(o, n):>11}"
                  f"{pc:>14.1f}{per_core(n['rps'])[0]:>7.1f}{need:>25,}", flush=True)
    for mode, levels in results.items():
        top = max(levels, key=int)
        pc, need = per_core(levels[top]["ours"]["rps"])
        print(f"capacity ({mode}, c={top}): {pc:.1f} requests/s per core -> {need:,} cores for 1,000,000 requests/s "
              f"(this box's cores also ran the load generator and Redis: an upper bound on cores)", flush=True)


def _child_argv(args: argparse.Namespace, root: Path, mode: str, out: Path) -> list[str]:
    """This script again for one ingress mode (the later copies of an option win in argparse)."""
    argv = [a for a in sys.argv[1:] if a != "--haproxy"]
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--ingress", mode, "--store", str(root),
            "--inprocess-requests", "0", "--json-out", str(out)]


def main() -> None:
    args = parse_cli()
    os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1" if args.throughput_optimized else "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.modes == ["haproxy"]:  # one mode: run here (read when Ray Serve is imported, so set it first)
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"

    n_items = 4_000 if args.catalog == "default" else 1_000_000
    root = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="recsys-serve-overhead-"))
    if not (root / "items.parquet").exists():
        from http_load import write_synthetic_store

        t0 = time.perf_counter()
        write_synthetic_store(root, n_items, args.users, 64)
        print(f"artifacts: {n_items:,} items x 64 in {time.perf_counter() - t0:.1f}s at {root}", flush=True)
    load0 = os.getloadavg()

    if args.inprocess_requests:
        sargs = serving_args(root, args.num_shards, args.redis_url, args.retrieval_k, args.ranking_placement,
                             args.retrieval_placement)
        res = inprocess_pipeline(sargs, UserStream(args.users).slice(0, args.inprocess_requests), args.n)
        print(f"in-process pipeline ({args.catalog}, no Ray, {res['candidates']:.0f} candidates/request): "
              f"wall p50 {res['p50']:.2f} ms  p99 {res['p99']:.2f} ms  CPU p50 {res['cpu_p50']:.2f} ms "
              f"over {res['n']} requests ({res['degraded']} degraded)", flush=True)
    if not args.serve:
        return

    results: dict[str, dict] = {}
    if len(args.modes) == 1:
        mode = args.modes[0]
        results[mode] = run_mode(args, root, mode)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results[mode]))
            return
    else:
        for mode in args.modes:  # each mode's env is read when Serve starts: one child process (and cluster) each
            out = Path(tempfile.mkdtemp(prefix="serve-overhead-")) / f"{mode}.json"
            rc = subprocess.call(_child_argv(args, root, mode, out))
            if rc != 0 or not out.exists():
                raise SystemExit(f"ingress mode {mode}: child exited {rc}")
            results[mode] = json.loads(out.read_text())
    summarize(results)
    load1 = os.getloadavg()
    print(f"load average (1 min) before/after: {load0[0]:.2f} / {load1[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
