"""Our numpy/scipy ALS vs ``implicit.cpu.als.AlternatingLeastSquares`` on the same data, in one process.

Same confidence matrix (c = 1 + alpha * r, passed to implicit as its confidence with alpha=1 so
both minimise the identical Hu/Koren/Volinsky objective), same factors, regularisation, CG steps
and iterations.  Prints seconds per iteration and test Recall@20 / NDCG@20 of each, and the
ratios ours / implicit.

    python benchmarks/als_vs_implicit.py            # default dataset (6k users x 4k items x ~1.1M events)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from recsys.platform.data.split import split_events
from recsys.platform.data.synthetic import SyntheticConfig, generate
from recsys.training.base import Catalog, interaction_matrix, top_n
from recsys.training.baselines import AlsRecommender
from recsys.training.evaluation import Evaluator


class ImplicitAdapter:
    """implicit's factors behind our Recommender.recommend (same filtering and top-n code)."""

    def __init__(self, model):
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    def recommend(self, users, user_items, n=20, filter_already_liked=True):
        users = np.asarray(users)
        return top_n(self.user_factors[users] @ self.item_factors.T, n, user_items, users)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=6_000)
    p.add_argument("--items", type=int, default=4_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--regularization", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--cg-steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    from implicit.cpu.als import AlternatingLeastSquares

    ds = generate(SyntheticConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed),
                  progress=False)
    split = split_events(ds.events, "global_time")
    cat = Catalog.from_dataset(ds)
    r = interaction_matrix(pd.concat([split.train, split.validation]), cat)
    ev = Evaluator.from_split(ds, split, cat, ks=(20,), bootstrap_samples=200, seed=args.seed)
    print(f"data: {r.shape[0]:,} users x {r.shape[1]:,} items, {r.nnz:,} non-zeros; factors={args.factors} "
          f"reg={args.regularization} alpha={args.alpha} iterations={args.iterations} cg_steps={args.cg_steps}; "
          f"cores={os.cpu_count()}")

    ours = AlsRecommender(factors=args.factors, regularization=args.regularization, alpha=args.alpha,
                          iterations=args.iterations, cg_steps=args.cg_steps, seed=args.seed)
    t0 = time.perf_counter()
    ours.fit(r)
    ours_total = time.perf_counter() - t0

    conf = r.copy()
    conf.data = 1.0 + args.alpha * conf.data
    times: list[float] = []
    last = [time.perf_counter()]

    def cb(iteration, elapsed, loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    imp = AlternatingLeastSquares(factors=args.factors, regularization=args.regularization, alpha=1.0,
                                  iterations=args.iterations, use_cg=True, calculate_training_loss=False,
                                  random_state=args.seed, num_threads=0)
    imp.cg_steps = args.cg_steps  # not a constructor argument in implicit 0.7
    # implicit threads itself and asks for a single-threaded BLAS (its own check warns otherwise):
    # give it the configuration it recommends so the comparison is fair to it.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        last[0] = t0
        imp.fit(conf, show_progress=False, callback=cb)
        imp_total = time.perf_counter() - t0

    rows = []
    for name, model, per_it, total in (("ours (torch SDDMM+SpMM)", ours, np.median(ours.iteration_seconds), ours_total),
                                       ("implicit 0.7 (C++)", ImplicitAdapter(imp), np.median(times), imp_total)):
        m = ev.evaluate(name, model).metrics
        rows.append((name, per_it, total, m["recall@20"], m["ndcg@20"]))
    print(f"\n{'model':<20} {'s/iter (median)':>16} {'total s':>9} {'recall@20':>18} {'ndcg@20':>18}")
    for name, per_it, total, rec, ndcg in rows:
        print(f"{name:<20} {per_it:>16.3f} {total:>9.2f} {rec.value:>9.4f} ±{(rec.hi - rec.lo) / 2:.4f} "
              f"{ndcg.value:>9.4f} ±{(ndcg.hi - ndcg.lo) / 2:.4f}")
    o, i = rows
    print(f"\nratio ours/implicit: time per iteration {o[1] / i[1]:.2f}x, recall@20 {o[3].value / i[3].value:.3f}, "
          f"ndcg@20 {o[4].value / i[4].value:.3f}")


if __name__ == "__main__":
    main()
