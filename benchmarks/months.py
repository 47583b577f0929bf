"""Compressed-time soak: N simulated days of traffic against one in-process serving replica (issue 22).

Each simulated day: recommendations for returning and new users, events posted in batches, new
catalog items, a poison entry in the event stream every ``--poison-every`` events; experiments start
(day 0 and 10) and end (day 20); two rolling upgrades (the replica is shut down through its app
lifespan and rebuilt, days 10 and 20) and one Redis restart (day 15, SHUTDOWN + restart of this
script's OWN redis-server with appendonly, never the shared 6379). Logs go through the Redis stream
into parquet (``log_archive``, retention ``--retention-days``).

The simulated clock: one simulated day lasts ``--day-s`` real seconds, and simulated time is a linear
function of real time (``SimClock``), so a day that takes longer than its slot shifts the days, never
the mapping. Everything that ages is scaled with it: the platform's lifetimes (``online_state``: user/
item real-time TTL ``--ttl-days``, event-id memory 1 day, stream retention 1 h; result-cache and LinUCB
TTLs) are set to their simulated length in real seconds, so Redis expires keys on its own (real) clock
exactly when the simulated deployment would; event, item, exposure and outcome times are simulated
times, and log retention prunes by the simulated date. At the end of each day the AOF is compacted
(BGREWRITEAOF, what Redis' auto-rewrite does each time the file doubles), so days compare.

Printed per simulated day (at its end): Redis used memory and key count, disk use of the work dir (AOF + parquet),
open file descriptors of this process, the feature consumer's lag (entries not yet delivered + pending)
and the seconds it took to reach 0 after the day's traffic. At the end: 5xx count, acked events lost
(accepted by a 202 but absent from the parquet event archive), growth over the last 10 days, and a
census of the keys left (by pattern, with and without a TTL).

What it does not simulate: several replicas, a Ray cluster, materialization (batch features).

    python benchmarks/months.py --days 30 --day-s 8 --ttl-days 7 --requests-per-day 100 --events-per-day 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DAY = 86_400


class OwnRedis:
    def __init__(self, workdir: Path, port: int):
        self.workdir, self.port, self.proc = workdir, port, None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        for _ in range(200):
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("own redis-server did not start")

    def restart(self) -> float:
        import redis

        t0 = time.monotonic()
        redis.Redis(port=self.port).shutdown(save=False, nosave=False)  # AOF flushed on shutdown
        self.proc.wait(timeout=30)
        self.start()
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def experiments_yaml(path: Path, names: list[str]) -> None:
    knob = {"exp_a": "mmr_lambda: 0.5", "exp_b": "freshness_weight: 0.3"}  # one knob per layer
    body = "version: 1\nexperiments:\n" + "".join(
        f"  - name: {n}\n    layer: {n}\n    variants:\n      - {{name: control, weight: 50}}\n"
        f"      - {{name: treat, weight: 50, reranking: {{{knob[n]}}}}}\n" for n in names)
    path.write_text(body if names else "version: 1\nexperiments: []\n")


def build(args: dict):
    from recsys.serving.config import ServingConfig
    from recsys.serving.deployments.ranker import Ranker
    from recsys.serving.deployments.retrieval_shard import RetrievalShard
    from recsys.serving.http.api import create_api
    from recsys.serving.pipeline.service import RecommendationService

    cfg = ServingConfig(**args)
    svc = RecommendationService(cfg, [RetrievalShard(cfg, 0, 1)], Ranker(cfg))
    return svc, create_api(svc)


@dataclass
class SimClock:
    """Simulated time = ``sim0`` + real seconds since ``real0`` x (one day / ``day_s``)."""

    sim0: float
    day_s: float
    real0: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.sim0 + (time.time() - self.real0) * DAY / self.day_s

    def real_s(self, sim_s: float) -> float:
        """Real seconds of a simulated duration (a TTL of ``sim_s`` in the simulated deployment)."""
        return sim_s * self.day_s / DAY


def scaled_args(base: dict, clock: SimClock, ttl_days: float) -> dict:
    """The replica's lifetimes, each set to its simulated length in real seconds (Redis ages keys in real time)."""
    ttl = max(1, round(clock.real_s(ttl_days * DAY)))
    return {**base,
            "online_state": {"user_ttl_s": ttl, "item_ttl_s": ttl, "event_id_ttl_s": max(1, round(clock.real_s(DAY))),
                             "stream_retention_s": clock.real_s(3600)},
            "cache": {"enabled": True, "ttl_s": clock.real_s(300), "generation_ttl_s": clock.real_s(7 * DAY)},
            "linucb": {"pending_ttl_s": max(1, round(clock.real_s(DAY)))}}


class Replica:
    """One serving replica run the way uvicorn / Serve run it: app lifespan entered, service started."""

    def __init__(self, args: dict, clock: SimClock):
        self.args, self.clock = args, clock
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> Replica:
        self.svc, self.app = build(self.args)
        await self.stack.enter_async_context(self.app.router.lifespan_context(self.app))
        await self.svc.start()
        # simulated time for what the replica time-stamps itself: exposures, outcome fallback, log retention
        self.svc.experiments.clock = self.clock
        if self.svc.experiments.archiver is not None:
            self.svc.experiments.archiver.clock = self.clock
        self.app.state.events.consumer.archive.clock = self.clock
        return self

    async def stop(self) -> None:
        """The rolling upgrade's shutdown: the lifespan closes tasks, threads and Redis clients."""
        await self.stack.aclose()
        self.svc = self.app = None
        gc.collect()


def aof_rewrite(r) -> None:
    """Compact the AOF (BGREWRITEAOF) and wait for it, so every day's disk figure is measured alike."""
    import redis

    with contextlib.suppress(redis.ResponseError):  # one already running (Redis' own auto-rewrite)
        r.bgrewriteaof()
    for _ in range(600):
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.05)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def lag(r, stream: str) -> int:
    try:
        groups = r.xinfo_groups(stream)
    except Exception:  # noqa: BLE001 - stream not created yet
        return 0
    return sum(int(g.get("lag") or 0) + int(g.get("pending") or 0) for g in groups)


def key_census(r) -> list[tuple[str, int, int]]:
    """(pattern, keys, keys without a TTL) of every key left: ids replaced by N, event ids by E."""
    import re

    total: Counter = Counter()
    no_ttl: Counter = Counter()
    for k in r.scan_iter(count=1000):
        name = k.decode(errors="replace")
        pattern = re.sub(r"\d+", "N", re.sub(r":seen:[0-9a-f]+$", ":seen:E", name))
        total[pattern] += 1
        if r.ttl(k) == -1:
            no_ttl[pattern] += 1
    return [(p, total[p], no_ttl[p]) for p in sorted(total)]


def _count(state: dict, status: int) -> None:
    state["status"][status] = state["status"].get(status, 0) + 1


async def day_traffic(c, day: int, clock: SimClock, a: argparse.Namespace, state: dict) -> None:
    import numpy as np

    rng = np.random.default_rng(day)
    state["joined"].append(state["next_user"])  # first id of the users who join today
    lo = state["joined"][max(0, day + 1 - a.user_lifetime_days)] if a.user_lifetime_days else 1

    def returning() -> int:  # a user who joined within the last --user-lifetime-days days
        return int(rng.integers(lo, state["next_user"]))

    for i in range(a.requests_per_day):
        new = i < a.new_users_per_day
        user = state["next_user"] + i if new else returning()
        r = await c.post("/v1/recommendations", json={"user_id": user, "n": 10})
        _count(state, r.status_code)
    state["next_user"] += a.new_users_per_day
    items = [{"item_id": state["next_item"] + j, "title": f"new {day}-{j}", "genres": ["Drama"],
              "created_at": _iso(clock())} for j in range(a.new_items_per_day)]
    state["next_item"] += a.new_items_per_day
    r = await c.post("/v1/items", json={"items": items})
    _count(state, r.status_code)
    if r.status_code == 422 and not state.get("shown_items"):
        state["shown_items"] = print("a 422 from /v1/items:", r.text[:300])
    for start in range(0, a.events_per_day, 100):
        batch = []
        for k in range(start, min(start + 100, a.events_per_day)):
            batch.append({"user_id": returning(), "event_id": uuid.uuid4().hex,
                          "item_id": int(rng.integers(1, state["next_item"])),
                          "event_type": "click" if k % 5 == 0 else "view", "timestamp": _iso(clock())})
        r = await c.post("/v1/events", json=batch)
        _count(state, r.status_code)
        if r.status_code == 422 and not state.get("shown"):
            state["shown"] = print("a 422 from /v1/events:", r.text[:300])
        if r.status_code == 202:
            state["accepted"].update({e["event_id"]: clock() for e in batch})
        state["events_sent"] += len(batch)
        if state["events_sent"] // a.poison_every > state["poisoned"]:
            state["poisoned"] += 1
            state["redis"].xadd(state["stream"], {"e": b"\xff not json"})


def report(rows: list[dict], state: dict, census: list, lost: int, kept: int, archived: int) -> None:
    five = sum(v for k, v in state["status"].items() if k >= 500)
    print(f"\nstatus counts {dict(sorted(state['status'].items()))}; 5xx: {five}; poison entries: "
          f"{state['poisoned']}; events accepted {len(state['accepted'])}, of them inside the retention window "
          f"{kept}, archived {archived}, acked-but-lost {lost}")
    print("\n| day | fault | Redis MiB | keys | disk MiB | AOF MiB | parquet MiB | fds | lag | catch-up s | late s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| {day} | {fault} | {redis_mb:.2f} | {keys} | {disk_mb:.2f} | {aof_mb:.2f} | {logs_mb:.2f} | {fds} | "
              "{lag} | {catch_up_s:.2f} | {late_s:.1f} |".format(**row))
    if len(rows) >= 20:
        import numpy as np

        print("growth over the last 10 days (trend: least-squares line through the 10 days, its change over them "
              "relative to its start; ends: last day vs the first of the 10):")
        for key in ("redis_mb", "keys", "disk_mb", "aof_mb", "logs_mb", "fds"):
            y = np.array([r[key] for r in rows[-10:]], float)
            slope, start = np.polyfit(np.arange(10), y, 1)
            print(f"  {key:<9} trend {100 * slope * 9 / max(start, 1e-9):+6.1f} %   ends "
                  f"{100 * (y[-1] - y[0]) / max(y[0], 1e-9):+6.1f} %   range {y.min():.2f} .. {y.max():.2f}")
    print("max catch-up after a fault day:",
          max((row["catch_up_s"] for row in rows if row["fault"]), default=0.0), "s")
    print("\nkeys left at the end (pattern, keys, of them without a TTL):")
    for pattern, n, n_no in census:
        print(f"  {pattern:<60} {n:>7} {n_no:>7}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--day-s", type=float, default=8.0, help="real seconds per simulated day")
    p.add_argument("--ttl-days", type=float, default=7.0,
                   help="simulated lifetime of a user's/item's real-time keys after their last event")
    p.add_argument("--requests-per-day", type=int, default=100)
    p.add_argument("--new-users-per-day", type=int, default=20)
    p.add_argument("--user-lifetime-days", type=int, default=10,
                   help="users come back for this many days after they joined, then leave (0 = forever)")
    p.add_argument("--events-per-day", type=int, default=300)
    p.add_argument("--new-items-per-day", type=int, default=3)
    p.add_argument("--poison-every", type=int, default=500, help="one poison stream entry per N events")
    p.add_argument("--retention-days", type=int, default=7)
    a = p.parse_args()

    import httpx
    import redis
    from http_load import _free_port, write_synthetic_store

    from recsys.platform import log_dataset

    work = Path(tempfile.mkdtemp(prefix="recsys-months-"))
    own = OwnRedis(work, _free_port())
    (work / "redis").mkdir()
    own.workdir = work / "redis"
    own.start()
    url = f"redis://127.0.0.1:{own.port}/0"
    write_synthetic_store(work, n_items=2000, n_users=500, dim=16)
    exp = work / "experiments.yaml"
    experiments_yaml(exp, ["exp_a"])
    logs = work / "logs"
    # simulated day 0 starts at a UTC midnight days + 2 days ago (the last simulated events stay in the past, for
    # the clock-skew check), so simulated day d is exactly one date partition of the parquet logs
    clock = SimClock(sim0=(time.time() // DAY - a.days - 2) * DAY, day_s=a.day_s)
    args = scaled_args({"model_store_uri": str(work / "models"), "catalog_path": str(work / "items.parquet"),
                        "num_shards": 1, "redis_url": url, "experiments_config": str(exp), "exploration_rate": 0.1,
                        "catalog_poll_s": 1, "security": {"insecure": True},
                        "log_archive": {"uri": str(logs), "retention_days": a.retention_days}}, clock, a.ttl_days)
    r = redis.Redis.from_url(url)
    state = {"next_user": 501, "joined": [1], "next_item": 2001, "status": {}, "accepted": {}, "events_sent": 0,
             "poisoned": 0, "redis": r, "stream": None}
    rows = []
    faults = {10: "rolling upgrade", 15: "redis restart", 20: "rolling upgrade"}

    async def run() -> None:
        rep = await Replica(args, clock).start()
        state["stream"] = rep.app.state.events.consumer.keys.stream
        clock.real0 = time.time()  # day 0 starts now (start-up is not simulated time)
        for day in range(a.days):
            late = time.time() - (clock.real0 + day * a.day_s)
            if late < 0:
                await asyncio.sleep(-late)
            fault = faults.get(day, "")
            if day == 10:
                experiments_yaml(exp, ["exp_a", "exp_b"])
            if day == 20:
                experiments_yaml(exp, ["exp_b"])
            if fault == "rolling upgrade":  # the replica is replaced: shut down through its lifespan, a new one starts
                await rep.stop()
                rep = await Replica(args, clock).start()
            elif fault == "redis restart":
                own.restart()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rep.app), base_url="http://t",
                                         timeout=60) as c:
                t0 = time.monotonic()
                await day_traffic(c, day, clock, a, state)
                busy = time.monotonic() - t0
            t1 = time.monotonic()
            while lag(r, state["stream"]) > 0 and time.monotonic() - t1 < 60:
                await asyncio.sleep(0.05)
            catch_up = time.monotonic() - t1
            # measure at the same instant of every simulated day, its end (expiry runs on the clock, so the
            # figures of a day depend on when in the day they are read)
            await asyncio.sleep(max(0.0, clock.real0 + (day + 1) * a.day_s - 0.5 - time.time()))
            aof_rewrite(r)
            info = r.info("memory")
            rows.append({"day": day, "fault": fault, "redis_mb": info["used_memory"] / 2**20, "keys": r.dbsize(),
                         "disk_mb": disk_mb(work), "aof_mb": disk_mb(own.workdir), "logs_mb": disk_mb(logs),
                         "fds": len(os.listdir("/proc/self/fd")),
                         "lag": lag(r, state["stream"]), "catch_up_s": catch_up, "traffic_s": busy,
                         "late_s": max(late, 0.0)})
            line = ("day {day:>2} {fault:<16} redis {redis_mb:7.2f} MiB keys {keys:>6} disk {disk_mb:7.2f} MiB "
                    "(AOF {aof_mb:.2f}, parquet {logs_mb:.2f}) fds {fds:>4} lag {lag:>4} catch-up {catch_up_s:5.2f} s "
                    "traffic {traffic_s:5.1f} s late {late_s:4.1f} s")
            print(line.format(**rows[-1]), flush=True)
        await rep.stop()

    try:
        asyncio.run(run())
        census = key_census(r)
        archived = {rec.get("event_id") for rec in log_dataset.iter_records(str(logs), "events")}
        # retention (simulated clock) removed older days on purpose: only kept days can be "lost"
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(clock() - a.retention_days * DAY))
        kept = {e for e, ts in state["accepted"].items() if log_dataset.day_of(ts) >= cutoff}
        report(rows, state, census, len(kept - archived), len(kept), len(archived))
    finally:
        own.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
