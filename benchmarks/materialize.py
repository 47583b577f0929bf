"""Materialization engines side by side, in one process, on the same offline tables and Redis.

Per engine (each in its own Feast project, keys deleted afterwards): a full load, timed on the
feature rows alone (seen sets excluded: every engine shares that code), then a daily incremental
run (full load up to the day before the last snapshot, then ``--incremental`` to the last one).
Prints rows/s and each engine's ratio to Feast's local engine (today's default before issue 21).

Each engine runs in its own child process (its own session), bounded by ``--engine-timeout`` seconds:
an engine that runs past it (the Ray-based ones once hung for more than 5 minutes on an idle 2-core box)
is killed with every process of its session (its private Ray cluster included), its Redis keys are
deleted, and it is reported as ``TIMED OUT``; the other engines still run, so one run always gives the
side-by-side figure. Ray-based engines start a private 2-CPU Ray cluster inside their child process.

    python benchmarks/materialize.py                              # 1x synthetic data (6k users, 4k items, 1M events)
    python benchmarks/materialize.py --scale 4 --engines inline ray-data
    python benchmarks/materialize.py --repo var/features          # an already built repo

Needs Redis (``--redis-url``, default db 2 of the local server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd


def build_repo(root: Path, scale: float, seed: int) -> Path:
    from recsys.features import FeatureStoreConfig, build_offline_features
    from recsys.platform.data.synthetic import SyntheticConfig, generate

    ds = generate(SyntheticConfig(n_users=int(6000 * scale), n_items=int(4000 * scale),
                                  n_events=int(1_000_000 * scale), seed=seed))
    build_offline_features(ds, FeatureStoreConfig(repo_dir=root), progress=False)
    return root


def run_engine(repo: Path, redis_url: str, engine: str, project: str) -> dict:
    from recsys.features import FeatureStoreConfig, apply, materialize
    from recsys.features.offline import load_metadata
    from recsys.features.online import delete_project_keys

    if "ray" in engine:
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = FeatureStoreConfig(repo_dir=repo, redis_url=redis_url, project=project)
    apply(cfg)
    try:
        full = materialize(cfg, progress=False, engine=engine)
        delete_project_keys(cfg)
        last = pd.Timestamp(load_metadata(cfg)["last_snapshot"]).to_pydatetime()
        materialize(cfg, end=last - pd.Timedelta(days=1), progress=False, engine=engine)
        t0 = time.perf_counter()
        inc = materialize(cfg, incremental=True, progress=False, engine=engine)
        inc_total = time.perf_counter() - t0
    finally:
        delete_project_keys(cfg)
    return {"engine": engine, "rows": full.rows, "seconds": full.rows_seconds,
            "rows_per_s": full.rows / full.rows_seconds, "inc_rows": inc.rows, "inc_seconds": inc.rows_seconds,
            "inc_seen_users": inc.seen_users, "inc_total_s": inc_total, "full_seen_users": full.seen_users}


def session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` (the engine child and whatever it started, Ray's included)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (ln.split() for ln in out.splitlines() if ln.strip()) if int(s) == sid]


def kill_session(sid: int) -> None:
    """SIGTERM, then SIGKILL, each process of the session we started (by pid, nothing else)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)


def run_bounded(repo: Path, redis_url: str, engine: str, timeout_s: float) -> dict:
    """``run_engine`` in a child process of its own session; killed (with its session) after ``timeout_s``."""
    from recsys.features import FeatureStoreConfig
    from recsys.features.online import delete_project_keys

    project = f"bench{uuid.uuid4().hex[:6]}"
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--child", engine, "--repo", str(repo), "--redis-url", redis_url,
               "--project", project, "--out", out.name]
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        t0 = time.monotonic()
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            proc.communicate()
            delete_project_keys(FeatureStoreConfig(repo_dir=repo, redis_url=redis_url, project=project))
            return {"engine": engine, "failed": f"TIMED OUT after {timeout_s:.0f} s (killed)"}
        finally:
            kill_session(proc.pid)  # a child that exited may leave its Ray processes behind
        if proc.returncode != 0:
            delete_project_keys(FeatureStoreConfig(repo_dir=repo, redis_url=redis_url, project=project))
            last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or [f"exit code {proc.returncode}"]
            return {"engine": engine, "failed": last[0][:200]}
        res = json.loads(Path(out.name).read_text())
        res["wall_s"] = time.monotonic() - t0
        return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repo", type=Path, default=None, help="A built feature repo (skips generate + build).")
    ap.add_argument("--engines", nargs="+", default=["feast", "feast-ray", "ray-data", "inline"])
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--engine-timeout", type=float, default=240.0,
                    help="Seconds one engine (full + incremental runs) may take before it is killed")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one engine, write --out
    ap.add_argument("--project", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        try:
            res = run_engine(args.repo, args.redis_url, args.child, args.project)
        except Exception as err:  # noqa: BLE001 - the parent reports the engine's own error line
            print(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", file=sys.stderr)
            sys.exit(1)
        Path(args.out).write_text(json.dumps(res))
        return

    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or build_repo(Path(tmp) / "features", args.scale, args.seed)
        runs = [run_bounded(repo, args.redis_url, e, args.engine_timeout) for e in args.engines]
    results = [r for r in runs if "failed" not in r]
    failed = {r["engine"]: r["failed"] for r in runs if "failed" in r}
    if not results:
        for e, why in failed.items():
            print(f"{e:>10} FAILED: {why}")
        sys.exit(1)
    base = next((r for r in results if r["engine"] == "feast"), results[0])
    print(f"{'engine':>10} {'rows':>8} {'full s':>8} {'rows/s':>9} {'vs feast':>9} | "
          f"{'inc rows':>8} {'inc s':>7} {'inc seen users':>14} {'inc total s':>11}")
    for r in results:
        print(f"{r['engine']:>10} {r['rows']:>8,} {r['seconds']:>8.2f} {r['rows_per_s']:>9,.0f} "
              f"{r['rows_per_s'] / base['rows_per_s']:>8.1f}x | {r['inc_rows']:>8,} {r['inc_seconds']:>7.2f} "
              f"{r['inc_seen_users']:>14,} {r['inc_total_s']:>11.2f}")
    for e, why in failed.items():
        print(f"{e:>10} FAILED: {why}")


if __name__ == "__main__":
    main()
