"""Feature store benchmark: online fetch latency (1 user + N items), materialization and ingest throughput.

Baseline in the same process: Feast's ``FeatureStore.get_online_features`` for the same requests
(same Redis, same rows); the figure of merit is the p50/p99 ratio Feast / OnlineFeatureClient.

    python benchmarks/feature_store_latency.py                     # default 6k users x 4k items x ~1.1M events
    python benchmarks/feature_store_latency.py --data-dir var/data --items 500 --iters 300

Uses its own Feast project on the given Redis db and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="Dataset dir (default: generate the default synthetic set)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--items", type=int, default=500, help="Candidate items per fetch")
    ap.add_argument("--iters", type=int, default=200, help="Fetches timed for the batched client")
    ap.add_argument("--feast-iters", type=int, default=40, help="Fetches timed for Feast get_online_features")
    ap.add_argument("--ingest", type=int, default=200, help="Single events ingested (latency)")
    ap.add_argument("--training-rows", type=int, default=200_000, help="Rows for get_training_features")
    ap.add_argument("--json", default=None, help="Also write the results here")
    args = ap.parse_args()

    from recsys.features import (
        FeatureStoreConfig,
        OnlineFeatureClient,
        apply,
        build_offline_features,
        get_training_features,
        materialize,
    )
    from recsys.features.ingest import get_ingestor
    from recsys.features.online import delete_project_keys
    from recsys.features.schema import VIEW_FEATURES
    from recsys.features.store import feature_store
    from recsys.platform.data.schema import Dataset
    from recsys.platform.data.synthetic import SyntheticConfig, generate

    ds = Dataset.load(args.data_dir) if args.data_dir else generate(SyntheticConfig(), progress=False)
    results: dict = {"dataset": {"events": len(ds.events), "users": ds.n_users, "items": ds.n_items}}
    with tempfile.TemporaryDirectory(prefix="feature_bench_") as tmp:
        cfg = FeatureStoreConfig(repo_dir=Path(tmp) / "repo", redis_url=args.redis_url,
                                 project=f"bench_{uuid.uuid4().hex[:8]}", event_log_path=Path(tmp) / "events.jsonl")
        try:
            build = build_offline_features(ds, cfg, progress=True)
            results["offline_build"] = {"seconds": build.seconds, "events_per_s": len(ds.events) / build.seconds,
                                        "user_rows": build.user_rows, "item_stats_rows": build.item_stats_rows}
            apply(cfg)
            stats = materialize(cfg, progress=True)
            results["materialize"] = {"rows": stats.rows, "seconds": stats.seconds, "rows_per_s": stats.rows_per_s,
                                      "rows_by_view": stats.rows_by_view}

            rng = np.random.default_rng(0)
            users = ds.users["user_id"].to_numpy()
            items = ds.items["item_id"].to_numpy()
            requests = [(int(rng.choice(users)), rng.choice(items, size=args.items, replace=False).tolist())
                        for _ in range(max(args.iters, args.feast_iters))]
            client = OnlineFeatureClient(cfg)
            for u, its in requests[:5]:  # warm the connection pool and key cache like a serving replica
                client.fetch(u, its)
            ours = []
            for u, its in requests[: args.iters]:
                t0 = time.perf_counter()
                client.fetch(u, its)
                ours.append(time.perf_counter() - t0)
            store = feature_store(cfg)
            refs = [f"{v}:{n}" for v, feats in VIEW_FEATURES.items() for n in feats]
            store.get_online_features(features=refs, entity_rows=[{"user_id": requests[0][0], "item_id": i}
                                                                  for i in requests[0][1]])
            feast = []
            for u, its in requests[: args.feast_iters]:
                t0 = time.perf_counter()
                store.get_online_features(features=refs,
                                          entity_rows=[{"user_id": u, "item_id": i} for i in its]).to_dict()
                feast.append(time.perf_counter() - t0)
            o, f = _pct(ours), _pct(feast)
            results["online_fetch"] = {"items": args.items, "batched_client": o, "feast_get_online_features": f,
                                       "speedup_p50": f["p50_ms"] / o["p50_ms"],
                                       "speedup_p99": f["p99_ms"] / o["p99_ms"]}

            ing = get_ingestor(cfg)
            lat = []
            for k in range(args.ingest):
                ev = {"user_id": int(rng.choice(users)), "item_id": int(rng.choice(items)),
                      "event_type": "click", "timestamp": pd.Timestamp.now(tz="UTC").isoformat()}
                t0 = time.perf_counter()
                r = ing.ingest([ev])
                lat.append(time.perf_counter() - t0)
                assert r.pushed, r.online_error
                if k == 0:
                    lat.clear()  # first call pays Feast registry loading
            results["ingest_event"] = _pct(lat)

            ev = ds.events.sample(min(args.training_rows, len(ds.events)), random_state=0)
            edf = ev[["user_id", "item_id", "timestamp"]].rename(columns={"timestamp": "event_timestamp"})
            t0 = time.perf_counter()
            get_training_features(cfg, edf, engine="asof")
            secs = time.perf_counter() - t0
            results["training_features_asof"] = {"rows": len(edf), "seconds": secs, "rows_per_s": len(edf) / secs}
            small = edf.head(2000)
            t0 = time.perf_counter()
            get_training_features(cfg, small, engine="feast")
            secs = time.perf_counter() - t0
            results["training_features_feast"] = {"rows": len(small), "seconds": secs, "rows_per_s": len(small) / secs}
        finally:
            delete_project_keys(cfg)

    of = results["online_fetch"]
    print()
    print(f"online fetch, 1 user + {args.items} items:")
    print(f"  OnlineFeatureClient (1 pipelined round trip): p50 {of['batched_client']['p50_ms']:.2f} ms, "
          f"p99 {of['batched_client']['p99_ms']:.2f} ms")
    print(f"  Feast get_online_features (baseline):         p50 {of['feast_get_online_features']['p50_ms']:.2f} ms,"
          f" p99 {of['feast_get_online_features']['p99_ms']:.2f} ms")
    print(f"  ratio Feast / batched: p50 x{of['speedup_p50']:.1f}, p99 x{of['speedup_p99']:.1f}")
    m = results["materialize"]
    print(f"materialize: {m['rows']:,} entity rows in {m['seconds']:.2f}s = {m['rows_per_s']:,.0f} rows/s")
    b = results["offline_build"]
    print(f"offline build: {results['dataset']['events']:,} events in {b['seconds']:.2f}s "
          f"= {b['events_per_s']:,.0f} events/s")
    i = results["ingest_event"]
    print(f"ingest_event (validate + fsync'd log + push): p50 {i['p50_ms']:.2f} ms, p99 {i['p99_ms']:.2f} ms")
    ta, tf = results["training_features_asof"], results["training_features_feast"]
    print(f"get_training_features: asof {ta['rows_per_s']:,.0f} rows/s ({ta['rows']:,} rows), "
          f"feast {tf['rows_per_s']:,.0f} rows/s ({tf['rows']:,} rows), "
          f"ratio x{ta['rows_per_s'] / tf['rows_per_s']:.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
