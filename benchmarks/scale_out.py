"""1 vs 2 Ray Train workers on the test suite's small dataset: quality and wall time, same process.

Per seed it trains the two-tower job and the ranker job with 1 worker and with 2 workers (half a
CPU each, DDP over gloo, the same global batch) and prints the best-epoch validation metric of each
(two-tower recall@20, ranker AUC), the 2-vs-1 difference, and the seed-to-seed spread of the 1-worker
runs, which is what the tolerances in tests/training/test_scale_out.py are set against.

    python benchmarks/scale_out.py                  # seeds 7 8 9, 2 epochs
    python benchmarks/scale_out.py --seeds 7 --epochs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys.platform.data.split import split_events
from recsys.platform.data.synthetic import SyntheticConfig, generate
from recsys.training.base import Catalog, user_histories
from recsys.training.config import TrainingConfig


def config(tmp: Path, seed: int, workers: int, epochs: int) -> TrainingConfig:
    """The tiny config of tests/training/conftest.py::small_config with the scale-out settings."""
    return TrainingConfig(
        storage_path=tmp / "ray_results", seed=seed, num_workers=workers, cpus_per_worker=0.5,
        retrieval={"embedding_dim": 16, "hidden_dim": 32, "history_length": 10, "batch_size": 256,
                   "epochs": epochs, "text_buckets": 256},
        ranking={"embedding_dim": 4, "hidden_dims": (16,), "candidates": 30, "hard_negatives": 5,
                 "random_negatives": 3, "epochs": epochs, "batch_size": 256, "feature_source": "inline",
                 "max_users": 200, "sparse_features": ("item_id",)},
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    import ray

    from recsys.training.ranking.data import build_ranking_examples
    from recsys.training.ranking.features import make_feature_source
    from recsys.training.ranking.job import train_ranker
    from recsys.training.two_tower.artifacts import TwoTowerRecommender
    from recsys.training.two_tower.job import train_two_tower

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}})
    ds = generate(SyntheticConfig(n_users=400, n_items=300, n_events=40_000, seed=7), progress=False)
    split, cat = split_events(ds.events), Catalog.from_dataset(ds)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for seed in args.seeds:
            tt, rk, secs = {}, {}, {}
            for w in (1, 2):
                t0 = time.perf_counter()
                tt[w] = train_two_tower(config(Path(d), seed, w, args.epochs), split.train, split.validation, cat,
                                        ds.items)
                secs[("tt", w)] = time.perf_counter() - t0
            cfg1 = config(Path(d), seed, 1, args.epochs)
            emb = tt[1].model.item_embeddings(cat.n_items).numpy()
            retrieval = TwoTowerRecommender(tt[1].model.user_tower, emb, user_histories(split.train, cat, 10))
            ex = build_ranking_examples(retrieval, split.train, split.validation, cat,
                                        make_feature_source("inline", ds), cfg1.ranking, seed,
                                        max_users=cfg1.ranking.max_users)
            for w in (1, 2):
                t0 = time.perf_counter()
                rk[w] = train_ranker(config(Path(d), seed, w, args.epochs), ex, cat.n_items, cat.n_users)
                secs[("rk", w)] = time.perf_counter() - t0
            row = {"seed": seed,
                   "tt1": tt[1].best_metrics["val_recall@20"], "tt2": tt[2].best_metrics["val_recall@20"],
                   "rk1": rk[1].best_metrics["val_auc"], "rk2": rk[2].best_metrics["val_auc"],
                   "tt_s": (secs[("tt", 1)], secs[("tt", 2)]), "rk_s": (secs[("rk", 1)], secs[("rk", 2)])}
            rows.append(row)
            print(f"seed {seed}: two-tower val recall@20 1w={row['tt1']:.4f} 2w={row['tt2']:.4f} "
                  f"(diff {row['tt2'] - row['tt1']:+.4f}; {row['tt_s'][0]:.0f}s vs {row['tt_s'][1]:.0f}s) | "
                  f"ranker val AUC 1w={row['rk1']:.4f} 2w={row['rk2']:.4f} (diff {row['rk2'] - row['rk1']:+.4f}; "
                  f"{row['rk_s'][0]:.0f}s vs {row['rk_s'][1]:.0f}s)", flush=True)
    ray.shutdown()
    for key, name in (("tt", "two-tower recall@20"), ("rk", "ranker AUC")):
        one = np.array([r[f"{key}1"] for r in rows])
        diff = np.array([r[f"{key}2"] - r[f"{key}1"] for r in rows])
        print(f"{name}: 1-worker seed range {one.min():.4f}-{one.max():.4f} (spread {np.ptp(one):.4f}); "
              f"2w-1w max |diff| {np.abs(diff).max():.4f}")


if __name__ == "__main__":
    main()
