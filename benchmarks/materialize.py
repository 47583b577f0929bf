"""Materialization engines side by side, in one process, on the same offline tables and Redis.

Per engine (each in its own Feast project, keys deleted afterwards): a full load, timed on the
feature rows alone (seen sets excluded: every engine shares that code), then a daily incremental
run (full load up to the day before the last snapshot, then ``--incremental`` to the last one).
Prints rows/s and each engine's ratio to Feast's local engine (today's default before issue 21).

    python benchmarks/materialize.py                              # 1x synthetic data (6k users, 4k items, 1M events)
    python benchmarks/materialize.py --scale 4 --engines inline ray-data
    python benchmarks/materialize.py --repo var/features          # an already built repo

Needs Redis (``--redis-url``, default db 2 of the local server).
"""

from __future__ import annotations

import argparse
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


def run_engine(repo: Path, redis_url: str, engine: str) -> dict:
    from recsys.features import FeatureStoreConfig, apply, materialize
    from recsys.features.offline import load_metadata
    from recsys.features.online import delete_project_keys

    cfg = FeatureStoreConfig(repo_dir=repo, redis_url=redis_url, project=f"bench{uuid.uuid4().hex[:6]}")
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repo", type=Path, default=None, help="A built feature repo (skips generate + build).")
    ap.add_argument("--engines", nargs="+", default=["feast", "feast-ray", "ray-data", "inline"])
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # ray-data / feast-ray join it
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo or build_repo(Path(tmp) / "features", args.scale, args.seed)
        results, failed = [], {}
        for e in args.engines:
            try:
                results.append(run_engine(repo, args.redis_url, e))
            except Exception as err:  # noqa: BLE001 - an engine that fails is reported, the others still run
                failed[e] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    base = next((r for r in results if r["engine"] == "feast"), results[0])
    print(f"{'engine':>10} {'rows':>8} {'full s':>8} {'rows/s':>9} {'vs feast':>9} | "
          f"{'inc rows':>8} {'inc s':>7} {'inc seen users':>14} {'inc total s':>11}")
    for r in results:
        print(f"{r['engine']:>10} {r['rows']:>8,} {r['seconds']:>8.2f} {r['rows_per_s']:>9,.0f} "
              f"{r['rows_per_s'] / base['rows_per_s']:>8.1f}x | {r['inc_rows']:>8,} {r['inc_seconds']:>7.2f} "
              f"{r['inc_seen_users']:>14,} {r['inc_total_s']:>11.2f}")
    for e, why in failed.items():
        print(f"{e:>10} FAILED: {why}")
    ray.shutdown()


if __name__ == "__main__":
    main()
