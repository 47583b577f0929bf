"""Does the ranker earn its place?  two-tower -> ranker vs two-tower alone, paired, on one split.

Trains (or reuses) a two-tower version, trains the ranker on the validation label windows, runs the
promotion gate on the gate window, then evaluates both on the test part: Recall@20 / NDCG@20 of
each, the paired-bootstrap 95% CI of the difference, and the ranker's ceiling (two-tower
Recall@200 and the merged candidates' recall). With ``--set`` overrides (a settings search) only the
gate window, part of validation, is reported: settings are chosen on validation, never on test.

    python benchmarks/ranker_vs_retrieval.py --data var/data --split global_time
    python benchmarks/ranker_vs_retrieval.py --data /tmp/ml/data --split leave_last_out \\
        --store /tmp/ml/models --retrieval-version base --set loss=bce
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset directory (recsys data generate / import-movielens)")
    ap.add_argument("--split", default="global_time", choices=["global_time", "leave_last_out"])
    ap.add_argument("--store", default=None, help="model store (default: a temporary one)")
    ap.add_argument("--retrieval-version", default=None, help="reuse this two_tower version (default: train one)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="ranking config override, e.g. --set epochs=4 --set loss='\"bce\"'")
    ap.add_argument("--in-process", action="store_true", help="fit the ranker in this process instead of Ray Train")
    args = ap.parse_args()

    import torch

    from recsys.platform.model_store import ModelStore
    from recsys.training.config import TrainingConfig
    from recsys.training.evaluation import Evaluator
    from recsys.training.ranking.gate import compare, per_user_metrics
    from recsys.training.ranking.pipeline import CandidateRecallRecommender
    from recsys.training.workflows import load_inputs, load_recommender, resolve_version, train_ranking, train_retrieval

    torch.set_num_threads(1)
    over = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    store_root = args.store or tempfile.mkdtemp(prefix="ranker-bench-")
    cfg = TrainingConfig(data_dir=args.data, model_store_uri=store_root, split=args.split,
                         storage_path=f"{store_root}/ray_results")
    cfg = cfg.model_copy(update={"ranking": cfg.ranking.model_copy(update=over)})
    store = ModelStore(store_root)
    inputs = load_inputs(cfg)
    t0 = time.perf_counter()
    tt = (resolve_version(store, "two_tower", args.retrieval_version) if args.retrieval_version
          else train_retrieval(cfg, inputs, store))
    t1 = time.perf_counter()
    rk = train_ranking(cfg, inputs, store, retrieval_version=tt.version, use_ray=not args.in_process)
    t2 = time.perf_counter()
    gate = rk.metrics["gate"]
    verdict = "PASSED" if gate["passed"] else "REFUSED"
    diffs = "; ".join(f"{m} diff {v['diff']:+.4f} [{v['lo']:+.4f}, {v['hi']:+.4f}]" for m, v in gate["metrics"].items())
    if over:  # a config search: validation (the gate window) only, the test part stays unread
        print(f"\ndata={args.data} split={args.split} ranking overrides={over}")
        print(f"gate ({gate['window']}, {gate['n_users']} users, validation): {verdict}; {diffs}")
        print("test part not evaluated: --set explores settings, which are chosen on validation only; run without "
              "--set (after changing the default) for the test comparison")
        return
    ev = Evaluator.from_split(inputs.dataset, inputs.split, inputs.catalog, part="test", ks=(20,),
                              bootstrap_samples=10, seed=cfg.seed)
    pipe = load_recommender(store, rk, inputs, cfg)
    recs = {"two_tower": ev.recommendations(pipe.ctx.retrieval, 200), "pipeline": ev.recommendations(pipe, 20)}
    t3 = time.perf_counter()
    paired = compare(recs["pipeline"], recs["two_tower"][:, :20], ev.targets, ("recall@20", "ndcg@20"), 0.95, cfg.seed)
    r200 = per_user_metrics(recs["two_tower"], ev.targets, (200,))["recall@200"].mean()
    merged = per_user_metrics(ev.recommendations(CandidateRecallRecommender(pipe.ctx), 1000), ev.targets,
                              (1000,))["recall@1000"].mean()
    print(f"\ndata={args.data} split={args.split} test users={len(ev.users)} ranking overrides={over or '{}'}")
    print(f"{'metric':<10} {'two_tower':>10} {'->ranker':>10} {'diff':>9}  95% paired CI")
    for m, v in paired.items():
        print(f"{m:<10} {v.retrieval:>10.4f} {v.pipeline:>10.4f} {v.diff:>+9.4f}  [{v.lo:+.4f}, {v.hi:+.4f}]")
    print(f"ceiling: two-tower Recall@200 {r200:.4f}; merged candidates (two-tower+item-kNN+popularity) "
          f"recall {merged:.4f}")
    print(f"gate ({gate['window']}, {gate['n_users']} users): {verdict}; {diffs}")
    print(f"seconds: two-tower {t1 - t0:.1f} (0 = reused), ranker (examples+fit+gate) {t2 - t1:.1f}, "
          f"test scoring {t3 - t2:.1f}; ranker {rk.version} in {store_root}")
    np.seterr(all="ignore")


if __name__ == "__main__":
    main()
