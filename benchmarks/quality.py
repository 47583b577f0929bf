"""Offline quality of every model on one split, both protocols, in one table (issue 10).

    python benchmarks/quality.py --data /path/to/ml-latest-small      # any MovieLens flavour (import-movielens)
    python benchmarks/quality.py                                      # synthetic data (see --users/--items/--events)
    python benchmarks/quality.py --data D --tune                      # validation-window grid for the defaults

For each protocol (global_time, leave_last_out) the data is split once, and every model is trained
the way ``recsys train all`` trains it (baselines and ``implicit`` fit on train + validation; the
two-tower model, SASRec on train; the ranker on the validation window through the workflow
functions, so the rows are the artifacts users get) and scored on the same test users and history.
Columns: Recall@20 and NDCG@20 with 95% bootstrap CIs, the paired-bootstrap CI of each model's
difference to the two-tower model on the same users (same resamples), and Recall@200, the ceiling
a ranker that reorders a model's top 200 can reach.  ``implicit`` rows are references only
(``pip install implicit``; dev extra), run with OPENBLAS_NUM_THREADS=1 as implicit asks.

``--tune`` never reads the test window: models fit on train, history = train, targets = the
validation window (:func:`tune`); its output chose the defaults recorded in docs/training.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit asks for it; set before numpy loads BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from recsys.platform.data.schema import Dataset  # noqa: E402
from recsys.platform.data.split import Split, split_events  # noqa: E402
from recsys.training.base import Catalog, interaction_matrix, top_n, user_histories  # noqa: E402
from recsys.training.baselines import BprRecommender, EaseRecommender  # noqa: E402
from recsys.training.cold_start import ColdStartFallback, cold_users, recent_popularity  # noqa: E402
from recsys.training.config import TrainingConfig  # noqa: E402
from recsys.training.evaluation import Evaluator, MetricValue, hit_matrix, ranking_metrics  # noqa: E402
from recsys.training.sequential.config import SequentialConfig  # noqa: E402

PROTOCOLS = ("global_time", "leave_last_out")
REFERENCE = "two_tower"
IMPLICIT_ALS = "implicit ALS"
PIPELINE = "pipeline (ranker)"
"""The served pipeline: every serving source's candidates (two-tower, item-kNN, SASRec, content, popularity)
reordered by the ranker trained on the same sources' scores and ranks."""


class FactorAdapter:
    """Any (user_factors, item_factors) pair behind Recommender.recommend (same filter and top-n code)."""

    def __init__(self, user_factors, item_factors):
        self.user_factors, self.item_factors = np.asarray(user_factors), np.asarray(item_factors)

    def recommend(self, users, user_items, n=20, filter_already_liked=True):
        users = np.asarray(users)
        return top_n(self.user_factors[users] @ self.item_factors.T, n,
                     user_items if filter_already_liked else None, users)


def implicit_models(x, seed: int, factors: int = 64, regularization: float = 0.05) -> dict:
    """implicit 0.7's ALS (same objective as ours: confidence 1 + 2r) and BPR, as reference rows."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    conf = x.copy()
    conf.data = 1.0 + 2.0 * conf.data
    out = {}
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=1.0, iterations=12,
                                      random_state=seed, num_threads=0, calculate_training_loss=False)
        als.fit(conf, show_progress=False)
        out["implicit ALS"] = FactorAdapter(als.user_factors, als.item_factors)
        bpr = BayesianPersonalizedRanking(factors=factors, random_state=seed, num_threads=0)
        bpr.fit((x > 0).astype(np.float32).tocsr(), show_progress=False)
        out["implicit BPR"] = FactorAdapter(bpr.user_factors, bpr.item_factors)
    return out


# --------------------------------------------------------------------------------- results
@dataclass
class Row:
    name: str
    recall: MetricValue
    ndcg: MetricValue
    recall200: float
    d_recall: MetricValue | None = None
    d_ndcg: MetricValue | None = None
    seconds: float = 0.0
    warm: tuple[float, float] = (float("nan"), float("nan"))  # (Recall@20, NDCG@20) of users with a history
    cold: tuple[float, float] = (float("nan"), float("nan"))  # ... and of users with none (the fallback's)


@dataclass
class ProtocolResult:
    protocol: str
    n_users: int
    n_cold: int = 0
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    reference: str = REFERENCE  # what the Δ columns subtract


def _ci(ev: Evaluator, per_user: np.ndarray, alpha: float) -> MetricValue:
    boot = (ev._weights @ per_user) / ev._weights.sum(axis=1)
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return MetricValue(float(per_user.mean()), float(lo), float(hi))


def score_lists(ev: Evaluator, lists: dict[str, np.ndarray], seconds: dict[str, float],
                reference: str = REFERENCE) -> list[Row]:
    """Recall/NDCG@20 with CIs, paired-bootstrap differences to ``reference``, Recall@200."""
    alpha = (1 - ev.confidence) / 2
    per_user = {}
    for name, recs in lists.items():
        hits = hit_matrix(recs, ev.targets)
        m20 = ranking_metrics(hits, ev.n_targets, 20)
        m200 = ranking_metrics(hits, ev.n_targets, min(200, recs.shape[1]))
        per_user[name] = (m20["recall"], m20["ndcg"], float(m200["recall"].mean()))
    rows = []
    ref = per_user.get(reference)
    cold = cold_users(ev.users, ev.user_items)
    for name, (rec, ndcg, r200) in per_user.items():
        row = Row(name, _ci(ev, rec, alpha), _ci(ev, ndcg, alpha), r200, seconds=seconds.get(name, 0.0))
        if (~cold).any():
            row.warm = (float(rec[~cold].mean()), float(ndcg[~cold].mean()))
        if cold.any():
            row.cold = (float(rec[cold].mean()), float(ndcg[cold].mean()))
        if ref is not None and name != reference:
            row.d_recall, row.d_ndcg = _ci(ev, rec - ref[0], alpha), _ci(ev, ndcg - ref[1], alpha)
        rows.append(row)
    return rows


def _fmt(v: MetricValue | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    s = "+" if signed else ""
    return f"{v.value:{s}.4f} [{v.lo:{s}.4f}, {v.hi:{s}.4f}]"


def markdown(results: list[ProtocolResult], title: str) -> str:
    ref = results[0].reference if results else REFERENCE
    lines = [f"**{title}**", "",
             f"| protocol | model | Recall@20 [95% CI] | NDCG@20 [95% CI] | ΔRecall@20 vs {ref} | "
             f"ΔNDCG@20 vs {ref} | Recall@200 | warm R@20 / N@20 | cold R@20 / N@20 | s |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|"]
    for res in results:
        for r in res.rows:
            lines.append(f"| {res.protocol} ({res.n_users} users, {res.n_cold} cold) | {r.name} | {_fmt(r.recall)} | "
                         f"{_fmt(r.ndcg)} | {_fmt(r.d_recall, True)} | {_fmt(r.d_ndcg, True)} | {r.recall200:.4f} | "
                         f"{r.warm[0]:.4f} / {r.warm[1]:.4f} | {r.cold[0]:.4f} / {r.cold[1]:.4f} | {r.seconds:.0f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- training
def _config(args, store_dir: Path, split: str) -> TrainingConfig:
    return TrainingConfig(
        data_dir=store_dir / "data", model_store_uri=str(store_dir / "models"), storage_path=store_dir / "ray",
        seed=args.seed, split=split,
        retrieval={"epochs": args.epochs} if args.epochs else {},
        ranking={"feature_source": "inline"},
        evaluation={"bootstrap_samples": args.bootstrap},
    )


def run_protocol(ds: Dataset, protocol: str, args, work: Path) -> ProtocolResult:
    from recsys.platform.model_store import ModelStore
    from recsys.training.sequential.workflow import train_sequential
    from recsys.training.workflows import (
        Inputs,
        candidate_recall,
        load_recommender,
        train_baselines,
        train_ranking,
        train_retrieval,
    )

    cfg = _config(args, work / protocol, protocol)
    split = split_events(ds.events, protocol)
    cat = Catalog.from_dataset(ds)
    inputs = Inputs(dataset=ds, split=split, catalog=cat)
    store = ModelStore(cfg.model_store_uri)
    ev = Evaluator.from_split(ds, split, cat, part="test", ks=(20,), bootstrap_samples=args.bootstrap,
                              seed=args.seed)
    res = ProtocolResult(protocol, len(ev.users), int(cold_users(ev.users, ev.user_items).sum()))
    fallback = recent_popularity(inputs.history, cat)  # what load_recommender gives every stored model
    lists: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}

    def add(name: str, model, t_fit: float) -> None:
        t0 = time.perf_counter()
        lists[name] = ev.recommendations(model, 200)
        seconds[name] = t_fit + time.perf_counter() - t0
        print(f"  [{protocol}] {name}: {seconds[name]:.1f}s", flush=True)

    versions = train_baselines(cfg, inputs, store, "v1", progress=False)
    for name, mv in versions.items():
        add(name, load_recommender(store, mv, inputs, cfg), float(mv.metadata["params"].get("train_seconds", 0)))
    if not args.no_implicit:
        t0 = time.perf_counter()
        x = interaction_matrix(inputs.history, cat)
        imp = implicit_models(x, args.seed)
        for name, model in imp.items():
            add(name, ColdStartFallback(model, fallback), (time.perf_counter() - t0) / 2)
    if args.baselines_only:  # the tuned baselines against implicit's ALS, nothing trained on Ray
        res.reference = IMPLICIT_ALS
        res.rows = score_lists(ev, lists, seconds, res.reference)
        res.notes = versus_implicit_als(ev, lists)
        return res
    t0 = time.perf_counter()
    tt = train_retrieval(cfg, inputs, store, "v1", progress=False)
    add("two_tower", load_recommender(store, tt, inputs, cfg), time.perf_counter() - t0)
    t0 = time.perf_counter()
    sc = SequentialConfig(**({"epochs": args.sasrec_epochs} if args.sasrec_epochs else {}))
    seq = train_sequential(cfg, inputs, store, "v1", sc=sc, progress=False)  # train only, as the two-tower
    add("sasrec", load_recommender(store, seq, inputs, cfg), time.perf_counter() - t0)
    ceiling = {}
    if not args.no_ranker:
        t0 = time.perf_counter()
        rk = train_ranking(cfg, inputs, store, "v1", retrieval_version=tt.version, sequential_version=seq.version,
                           progress=True)
        add(PIPELINE, load_recommender(store, rk, inputs, cfg), time.perf_counter() - t0)
        ceiling = candidate_recall(cfg, inputs, store, rk)
    res.rows = score_lists(ev, lists, seconds)
    res.notes = versus_best_single(ev, lists, res.rows, PIPELINE) + versus_implicit_als(ev, lists)
    p = seq.metadata.get("params", {})
    best = next((h for h in p.get("history", []) if h.get("epoch") == p.get("best_epoch")), {})
    res.notes.append(f"sasrec best epoch {p.get('best_epoch')} of {len(p.get('history', []))} "
                     f"(val NDCG@20 {best.get('val_ndcg@20', float('nan')):.4f})")
    if ceiling:
        res.notes.append(f"ranker ceiling on test: merged candidate recall (two-tower + item-kNN + SASRec + content "
                         f"+ popularity, seen removed) {ceiling['merged_candidates_recall']:.4f}; two-tower Recall@200 "
                         f"{ceiling['two_tower_recall@200']:.4f}")
    return res


def _paired(ev: Evaluator, lists: dict[str, np.ndarray], a: str, b: str) -> dict[str, MetricValue]:
    """Paired-bootstrap CIs of ``a`` minus ``b`` on the same users, Recall@20 and NDCG@20."""
    alpha = (1 - ev.confidence) / 2
    ma, mb = (ranking_metrics(hit_matrix(lists[n], ev.targets), ev.n_targets, 20) for n in (a, b))
    return {k: _ci(ev, ma[k] - mb[k], alpha) for k in ("recall", "ndcg")}


def versus_best_single(ev: Evaluator, lists: dict[str, np.ndarray], rows: list[Row], pipeline: str) -> list[str]:
    """Paired CIs of ``pipeline`` minus the best single model of the table (by NDCG@20, then Recall@20)."""
    singles = [r for r in rows if r.name != pipeline]
    if pipeline not in lists or not singles:
        return []
    best = max(singles, key=lambda r: (r.ndcg.value, r.recall.value)).name
    d = _paired(ev, lists, pipeline, best)
    return [f"{pipeline} - {best} (best single model) {k}@20: {_fmt(d[k], True)}" for k in ("recall", "ndcg")]


def versus_implicit_als(ev: Evaluator, lists: dict[str, np.ndarray]) -> list[str]:
    """Paired CIs of our EASE and iALS minus ``implicit``'s ALS (issue 24: "at least as good as implicit's ALS")."""
    if IMPLICIT_ALS not in lists:
        return []
    out = []
    for name in ("ease", "als"):
        if name in lists:
            d = _paired(ev, lists, name, IMPLICIT_ALS)
            deltas = ", ".join(f"{k}@20 {_fmt(d[k], True)}" for k in ("recall", "ndcg"))
            out.append(f"{name} - {IMPLICIT_ALS}: {deltas}")
    return out


# --------------------------------------------------------------------------------- tuning
def tune(ds: Dataset, split: Split, grid: dict[str, list[dict]], seed: int = 42,
         sasrec_fit=None) -> list[tuple[str, dict, float, float]]:
    """Validation-window scores of each setting: fit on train only, history = train, targets = validation.

    The test window is never read (the evaluator is built with ``part="validation"``, which takes
    history from train and targets from validation only).  Users without a training history get the
    shared recent-popularity fallback, as in the test table.  Returns (model, params, recall@20, ndcg@20).
    """
    from recsys.training.baselines import AlsRecommender, ItemKnnRecommender

    cat = Catalog.from_dataset(ds)
    ev = Evaluator.from_split(ds, split, cat, part="validation", ks=(20,), bootstrap_samples=10, seed=seed)
    x = interaction_matrix(split.train, cat)
    fallback = recent_popularity(split.train, cat)
    out = []
    for name, settings in grid.items():
        kind = name.split(" (")[0]  # "als (edge)": a grid's follow-up beyond its own edge fits the same model
        for params in settings:
            if kind == "ease":
                model = EaseRecommender(**params).fit(x)
            elif kind == "als":
                model = AlsRecommender(seed=seed, **params).fit(x)
            elif name == "item_knn":
                model = ItemKnnRecommender(**params).fit(x)
            elif name == "implicit ALS":
                model = implicit_models(x, seed, **params)["implicit ALS"]
            elif name == "bpr":
                model = BprRecommender(seed=seed, **params).fit(x)
            elif name == "sasrec" and sasrec_fit is not None:
                model = sasrec_fit(SequentialConfig(**params))
            else:
                continue
            m = ev.evaluate(name, ColdStartFallback(model, fallback)).metrics
            out.append((name, params, m["recall@20"].value, m["ndcg@20"].value))
            print(f"  tune {name} {params}: val recall@20={out[-1][2]:.4f} ndcg@20={out[-1][3]:.4f}", flush=True)
    for name in grid:
        mine = [o for o in out if o[0] == name]
        if mine:
            best = max(mine, key=lambda o: o[3])
            print(f"  best {name} by val ndcg@20: {best[1]} recall@20={best[2]:.4f} ndcg@20={best[3]:.4f}", flush=True)
    return out


TUNE_GRID = {
    # SASRec stops early on validation NDCG@20 by itself: one run prints the epoch curve
    "sasrec": [{}],
    "ease": [{"regularization": r} for r in (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)],
    # iALS after Rendle et al. 2022: regularization, confidence alpha, unobserved weight, dimension; init 0.1/sqrt(d)
    # (the first grid, lambda {1, 10, 100} x alpha {1, 10} x w0 {0.01, 0.1, 1}, chose its own edge lambda=1, w0=1:
    # this one is centred there and adds d=128)
    "als": [{"factors": d, "regularization": lam, "alpha": a, "unobserved_weight": w0, "iterations": 16}
            for d in (64, 128) for lam in (0.1, 0.3, 1.0, 3.0) for a in (0.3, 1.0, 3.0) for w0 in (1.0, 3.0)],
    # that grid's choice (d=128, lambda=3, alpha=0.3, w0=3, by the sum of both protocols' validation NDCG@20
    # relative to each protocol's best) sat on three edges: step past each
    "als (edge)": [{"factors": 128, "regularization": lam, "alpha": a, "unobserved_weight": w0, "iterations": 16}
                   for lam in (3.0, 10.0, 30.0) for a in (0.1, 0.3) for w0 in (3.0, 10.0)],
    # ... and past the dimension edge at the chosen point (Rendle et al. grow d with lambda)
    "als (d)": [{"factors": d, "regularization": lam, "alpha": 0.3, "unobserved_weight": 3.0, "iterations": 16}
                for d in (256, 512) for lam in (10.0, 30.0, 100.0)],
    "item_knn": [{"neighbors": k, "shrinkage": s} for k in (50, 200) for s in (0.0, 10.0, 100.0)],
    "implicit ALS": [{"factors": 64, "regularization": r} for r in (0.05, 1.0, 10.0)],
}


def start_ray(attempts: int = 4) -> None:
    """Ray waits a fixed 30 s for its raylet; on a heavily loaded machine that fails, so try again."""
    import ray

    from recsys.training.ray_job import ensure_ray

    for attempt in range(attempts):
        try:
            ensure_ray()
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception on this timeout
            print(f"ray start failed ({e}); attempt {attempt + 1}/{attempts}", flush=True)
            ray.shutdown()
            time.sleep(5)
    ensure_ray()


def load_data(args) -> Dataset:
    if args.data:
        from recsys.platform.data.movielens import load_movielens

        return load_movielens(args.data, max_negative_rating=args.max_negative_rating,
                              drop_unknown_movies=args.drop_unknown_movies)
    from recsys.platform.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed),
                    progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MovieLens directory (u.data / ratings.dat / ratings.csv); default: synthetic")
    p.add_argument("--max-negative-rating", type=float, default=2.0)
    p.add_argument("--drop-unknown-movies", action="store_true")
    p.add_argument("--users", type=int, default=6_000)
    p.add_argument("--items", type=int, default=4_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--epochs", type=int, default=None, help="two-tower epochs (default: RetrievalConfig)")
    p.add_argument("--sasrec-epochs", type=int, default=None, help="default: SequentialConfig")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-implicit", action="store_true")
    p.add_argument("--no-ranker", action="store_true")
    p.add_argument("--baselines-only", action="store_true",
                   help="only the baselines and implicit's rows (Δ columns against implicit ALS): the check of "
                        "tuned EASE / iALS against implicit without training the Ray models")
    p.add_argument("--tune", action="store_true", help="validation-window grid instead of the test table")
    p.add_argument("--tune-models", default=",".join(TUNE_GRID), help="which grids --tune runs")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args()
    if args.baselines_only and args.no_implicit:
        p.error("--baselines-only compares against implicit's ALS: drop --no-implicit")

    t_all = time.perf_counter()
    ds = load_data(args)
    title = (f"{ds.name} ({Path(args.data).name})" if args.data else
             f"synthetic {args.users}x{args.items}x{args.events}") + \
        f": {ds.n_users:,} users, {ds.n_items:,} items, {len(ds.events):,} events"
    print(title, flush=True)
    if not args.baselines_only and not (args.tune and "sasrec" not in args.tune_models.split(",")):
        start_ray()  # the two-tower, SASRec and the ranker train on Ray; the baselines do not
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        work = Path(tmp)
        if args.tune:
            from recsys.training.sequential.artifacts import sasrec_recommender
            from recsys.training.sequential.job import train_sasrec

            for protocol in args.protocols.split(","):
                split = split_events(ds.events, protocol)
                cat = Catalog.from_dataset(ds)

                def fit(sc, split=split, cat=cat):
                    tr = train_sasrec(sc, split.train, split.validation, cat, seed=args.seed,
                                      storage_path=str(work / "ray"))
                    return sasrec_recommender(tr.model, user_histories(split.train, cat, sc.max_length))

                print(f"[{protocol}] validation grid", flush=True)
                grid = {k: v for k, v in TUNE_GRID.items() if k in args.tune_models.split(",")}
                tune(ds, split, grid, args.seed, sasrec_fit=fit)
            return
        results = []
        for protocol in args.protocols.split(","):
            t0 = time.perf_counter()
            res = run_protocol(ds, protocol, args, work)
            res.timings["total_s"] = round(time.perf_counter() - t0, 1)
            results.append(res)
            print(markdown([res], f"{title} — {protocol} ({res.timings['total_s']:.0f}s)"), flush=True)
            print("\n".join(res.notes), flush=True)
    print()
    print(markdown(results, title))
    for r in results:
        print("\n".join(f"[{r.protocol}] {n}" for n in r.notes))
    print(f"\ntotal {time.perf_counter() - t_all:.0f}s; Δ = paired bootstrap over the same users "
          f"({args.bootstrap} resamples); Recall@200 = the top-200 list's recall (a ranker's ceiling)")
    if args.out:
        Path(args.out).write_text(json.dumps([{"protocol": r.protocol, "n_users": r.n_users, "timings": r.timings,
                                               "notes": r.notes, "n_cold": r.n_cold,
                                               "rows": [{"name": x.name, "recall@20": x.recall.__dict__,
                                                         "ndcg@20": x.ndcg.__dict__, "recall@200": x.recall200,
                                                         "d_recall": x.d_recall and x.d_recall.__dict__,
                                                         "d_ndcg": x.d_ndcg and x.d_ndcg.__dict__}
                                                        for x in r.rows]} for r in results], indent=2))


if __name__ == "__main__":
    main()
