"""Compressed-time soak: N simulated days of traffic against one in-process serving replica (issue 22).

Each simulated day: recommendations for returning and new users, events (timestamped on the
simulated clock) posted in batches, new catalog items, a poison entry in the event stream every
``--poison-every`` events; experiments start (day 0 and 10) and end (day 20); two rolling upgrades
(the replica is rebuilt on days 10 and 20) and one Redis restart (day 15, SHUTDOWN + restart of this
script's OWN redis-server with appendonly, never the shared 6379). Logs go through the Redis stream
into parquet (``log_archive``, retention ``--retention-days``).

Printed per simulated day: Redis used memory and key count, disk use of the work dir, open file
descriptors of this process, the feature consumer's lag (entries not yet delivered + pending) and
the seconds it took to reach 0 after the day's traffic. At the end: 5xx count, acked events lost
(accepted by a 202 but absent from the parquet event archive), growth over the last 10 days.

What it does not simulate: wall-clock TTL expiry (Redis expires keys on the real clock, so keys with
TTLs do not age here), several replicas, a Ray cluster. Exposure records carry the real time.

    python benchmarks/months.py --days 30 --requests-per-day 100 --events-per-day 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
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


async def day_traffic(c, day: int, sim0: float, a: argparse.Namespace, state: dict) -> None:
    import numpy as np

    rng = np.random.default_rng(day)
    sim_day = sim0 + day * DAY
    for i in range(a.requests_per_day):
        new = i < a.new_users_per_day
        user = state["next_user"] + i if new else int(rng.integers(1, state["next_user"]))
        r = await c.post("/v1/recommendations", json={"user_id": user, "n": 10})
        state["status"][r.status_code] = state["status"].get(r.status_code, 0) + 1
    state["next_user"] += a.new_users_per_day
    items = [{"item_id": state["next_item"] + j, "title": f"new {day}-{j}", "genres": ["Drama"],
              "created_at": _iso(sim_day)} for j in range(a.new_items_per_day)]
    state["next_item"] += a.new_items_per_day
    r = await c.post("/v1/items", json={"items": items})
    state["status"][r.status_code] = state["status"].get(r.status_code, 0) + 1
    if r.status_code == 422 and not state.get("shown_items"):
        state["shown_items"] = print("a 422 from /v1/items:", r.text[:300])
    for start in range(0, a.events_per_day, 100):
        batch = []
        for k in range(start, min(start + 100, a.events_per_day)):
            eid = uuid.uuid4().hex
            batch.append({"user_id": int(rng.integers(1, state["next_user"])), "event_id": eid,
                          "item_id": int(rng.integers(1, state["next_item"])),
                          "event_type": "click" if k % 5 == 0 else "view", "timestamp": _iso(sim_day + k)})
        r = await c.post("/v1/events", json=batch)
        state["status"][r.status_code] = state["status"].get(r.status_code, 0) + 1
        if r.status_code == 422 and not state.get("shown"):
            state["shown"] = print("a 422 from /v1/events:", r.text[:300])
        if r.status_code == 202:
            state["accepted"].update({e["event_id"]: sim_day for e in batch})
        state["events_sent"] += len(batch)
        if state["events_sent"] // a.poison_every > state["poisoned"]:
            state["poisoned"] += 1
            state["redis"].xadd(state["stream"], {"e": b"\xff not json"})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--requests-per-day", type=int, default=100)
    p.add_argument("--new-users-per-day", type=int, default=20)
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
    args = {"model_store_uri": str(work / "models"), "catalog_path": str(work / "items.parquet"), "num_shards": 1,
            "redis_url": url, "experiments_config": str(exp), "exploration_rate": 0.1, "catalog_poll_s": 1,
            "security": {"insecure": True}, "cache": {"enabled": True, "ttl_s": 300},
            "log_archive": {"uri": str(logs), "retention_days": a.retention_days}}
    r = redis.Redis.from_url(url)
    state = {"next_user": 501, "next_item": 2001, "status": {}, "accepted": {}, "events_sent": 0,
             "poisoned": 0, "redis": r, "stream": None}
    sim0 = time.time() - (a.days + 1) * DAY
    rows = []
    faults = {10: "rolling upgrade", 15: "redis restart", 20: "rolling upgrade"}

    async def run() -> None:
        svc, app = build(args)
        await svc.start()
        state["stream"] = app.state.events.consumer.keys.stream
        for day in range(a.days):
            fault = faults.get(day, "")
            if day == 10:
                experiments_yaml(exp, ["exp_a", "exp_b"])
            if day == 20:
                experiments_yaml(exp, ["exp_b"])
            if fault == "rolling upgrade":  # the replica is replaced: its threads stop, a new one starts
                app.state.events.stop()
                if svc.experiments.archiver is not None:
                    svc.experiments.archiver.stop()
                svc, app = build(args)
                await svc.start()
            elif fault == "redis restart":
                own.restart()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                         timeout=60) as c:
                t0 = time.monotonic()
                await day_traffic(c, day, sim0, a, state)
                busy = time.monotonic() - t0
            t1 = time.monotonic()
            while lag(r, state["stream"]) > 0 and time.monotonic() - t1 < 60:
                await asyncio.sleep(0.05)
            catch_up = time.monotonic() - t1
            info = r.info("memory")
            rows.append({"day": day, "fault": fault, "redis_mb": info["used_memory"] / 2**20, "keys": r.dbsize(),
                         "disk_mb": disk_mb(work), "fds": len(os.listdir("/proc/self/fd")),
                         "lag": lag(r, state["stream"]), "catch_up_s": catch_up, "traffic_s": busy})
            line = ("day {day:>2} {fault:<16} redis {redis_mb:7.2f} MiB keys {keys:>6} disk {disk_mb:7.2f} MiB "
                    "fds {fds:>4} lag {lag:>4} catch-up {catch_up_s:5.2f} s traffic {traffic_s:5.1f} s")
            print(line.format(**rows[-1]), flush=True)
        app.state.events.stop()
        if svc.experiments.archiver is not None:
            svc.experiments.archiver.stop()

    try:
        asyncio.run(run())
        archived = {rec.get("event_id") for rec in log_dataset.iter_records(str(logs), "events")}
        # retention (real clock, like prune) removed older days on purpose: only kept days can be "lost"
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() - a.retention_days * DAY))
        kept = {e for e, ts in state["accepted"].items() if log_dataset.day_of(ts) >= cutoff}
        lost = len(kept - archived)
        five = sum(v for k, v in state["status"].items() if k >= 500)
        print(f"\nstatus counts {dict(sorted(state['status'].items()))}; 5xx: {five}; poison entries: "
              f"{state['poisoned']}; events accepted {len(state['accepted'])}, of them inside the retention window "
              f"{len(kept)}, archived {len(archived)}, acked-but-lost {lost}")
        print("\n| day | fault | Redis MiB | keys | disk MiB | fds | lag | catch-up s |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print("| {day} | {fault} | {redis_mb:.2f} | {keys} | {disk_mb:.2f} | {fds} | {lag} | {catch_up_s:.2f} |"
                  .format(**row))
        if len(rows) >= 20:
            for key in ("redis_mb", "keys", "disk_mb", "fds"):
                a0, a1 = rows[-10][key], rows[-1][key]
                print(f"growth over the last 10 days, {key}: {100 * (a1 - a0) / max(a0, 1e-9):+.1f} %")
        print("max catch-up after a fault day:",
              max((row["catch_up_s"] for row in rows if row["fault"]), default=0.0), "s")
    finally:
        own.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
