"""End-to-end training steps the CLI calls: load data, fit, write store versions, evaluate.

Time protocol (one split, default ``global_time``):

* baselines fit on train + validation (everything before the test cut);
* the two-tower model trains on train; validation measures it per epoch.  At test time its user
  tower reads histories that include validation events (fold-in, no retraining needed);
* the ranker learns from the validation window: labels there, features as of its start, and
  candidates / ``retrieval_score`` from the two-tower model trained on train (no leakage);
* evaluation: test targets, history = train + validation, same users and filters for every model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.platform.data.schema import Dataset, DatasetError
from recsys.platform.data.split import Split, split_events
from recsys.platform.model_store import ModelStore, ModelStoreError, ModelVersion
from recsys.training.base import Catalog, interaction_matrix, user_histories
from recsys.training.baselines import (
    AlsRecommender,
    BprRecommender,
    EaseRecommender,
    EaseTooLargeError,
    ItemKnnRecommender,
    PopularityRecommender,
)
from recsys.training.config import TrainingConfig
from recsys.training.evaluation import EvaluationReport, Evaluator

BASELINES = ("popularity", "item_knn", "als", "bpr", "ease")
RETRIEVAL_NAME = "two_tower"
RANKER_NAME = "ranker"


class TrainingInputError(ValueError):
    """Bad input the user can fix (missing data, unknown model version); the CLI exits 2."""


@dataclass
class Inputs:
    dataset: Dataset
    split: Split
    catalog: Catalog

    @property
    def history(self) -> pd.DataFrame:
        """Everything before the test cut."""
        return pd.concat([self.split.train, self.split.validation])


def load_inputs(cfg: TrainingConfig) -> Inputs:
    try:
        ds = Dataset.load(cfg.data_dir)
    except DatasetError as e:
        raise TrainingInputError(str(e)) from e
    split = split_events(ds.events, cfg.split)
    if len(split.train) == 0 or len(split.test) == 0:
        raise TrainingInputError(f"{cfg.data_dir}: too few events to split ({len(ds.events)})")
    return Inputs(dataset=ds, split=split, catalog=Catalog.from_dataset(ds))


def _echo(msg: str, progress: bool) -> None:
    if progress:
        print(msg, flush=True)


# ------------------------------------------------------------------------------- baselines
def train_baselines(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, version: str | None = None,
                    promote: bool = False, progress: bool = True,
                    models: tuple[str, ...] | None = None) -> dict[str, ModelVersion]:
    """Fit, save and (optionally) promote the baselines: ``models`` (default: all of ``BASELINES``).

    EASE above ``ease_max_items`` is skipped with a message when it is part of the default set, and is
    an error (exit code 2 from the CLI) when asked for by name: it would not fit the machine."""
    bc = cfg.baselines
    unknown = set(models or ()) - set(BASELINES)
    if unknown:
        raise TrainingInputError(f"unknown baseline(s) {sorted(unknown)}; choose from {', '.join(BASELINES)}")
    x = interaction_matrix(inputs.history, inputs.catalog)
    item_ids, user_ids = inputs.catalog.items.ids, inputs.catalog.users.ids
    data_hash = inputs.dataset.content_hash()
    out = {}
    for name in models or BASELINES:
        t0 = time.perf_counter()
        if name == "popularity":
            model, params = PopularityRecommender().fit(x), {}
        elif name == "item_knn":
            params = {"neighbors": bc.knn_neighbors, "shrinkage": bc.knn_shrinkage}
            model = ItemKnnRecommender(**params).fit(x)
        elif name == "bpr":
            model = BprRecommender(seed=cfg.seed)
            params = {"factors": model.factors, "learning_rate": model.learning_rate, "epochs": model.epochs,
                      "regularization": model.regularization}
            model.fit(x)
        elif name == "ease":
            model = EaseRecommender(regularization=bc.ease_regularization, max_items=bc.ease_max_items)
            params = {"regularization": model.regularization, "keep": model.keep, "max_items": model.max_items}
            try:
                model.fit(x)
            except EaseTooLargeError as e:  # a closed form that does not fit the machine is skipped, not fatal
                if models is not None:
                    raise TrainingInputError(str(e)) from e
                _echo(f"[ease] skipped: {e}", progress)
                continue
        else:
            params = {"factors": bc.als_factors, "regularization": bc.als_regularization, "alpha": bc.als_alpha,
                      "iterations": bc.als_iterations, "cg_steps": bc.als_cg_steps,
                      "unobserved_weight": bc.als_unobserved_weight, "init_std": bc.als_init_std}
            model = AlsRecommender(**params, seed=cfg.seed)
            from tqdm.auto import tqdm

            with tqdm(total=bc.als_iterations, desc="als", unit="it", disable=not progress) as bar:
                model.fit(x, callback=lambda it, dt, bar=bar: bar.update(1))
        seconds = time.perf_counter() - t0
        params.update({"split": cfg.split, "fit_on": "train+validation", "train_seconds": round(seconds, 3)})
        v = version or ModelStore.new_version_id()
        with store.write_version(name, v, kind="baseline", params=params, data_hash=data_hash) as d:
            if name in ("als", "bpr"):
                model.save(d, item_ids, user_ids)
            else:
                model.save(d, item_ids)
        mv = store.get(name, v)
        if promote:
            store.promote(name, mv.version)
        _echo(f"[{name}] trained in {seconds:.1f}s -> {name}/{mv.version}{' (promoted)' if promote else ''}",
              progress)
        out[name] = mv
    return out


# ------------------------------------------------------------------------------- retrieval
def train_retrieval(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, version: str | None = None,
                    promote: bool = False, progress: bool = True) -> ModelVersion:
    from recsys.training.two_tower.artifacts import TwoTowerRecommender, write_two_tower
    from recsys.training.two_tower.job import train_two_tower

    rc = cfg.retrieval
    _echo(f"[two_tower] training on {len(inputs.split.train):,} events ({rc.epochs} epochs, "
          f"{cfg.num_workers} Ray Train worker(s))", progress)
    trained = train_two_tower(cfg, inputs.split.train, inputs.split.validation, inputs.catalog,
                              inputs.dataset.items)
    emb = trained.model.item_embeddings(inputs.catalog.n_items).numpy()
    best = trained.best_metrics  # the exported weights are the best validation epoch's, not the last
    metrics = {k: v for k, v in best.items() if k in ("loss", "val_recall@20") and v == v}
    params = {**rc.model_dump(), "seed": cfg.seed, "split": cfg.split, "fit_on": "train",
              "num_workers": cfg.num_workers, "best_epoch": trained.best_epoch,
              "train_seconds": round(trained.seconds, 3), "history": trained.history}
    config = {"embedding_dim": rc.embedding_dim, "history_length": rc.history_length,
              "n_items": inputs.catalog.n_items, "n_users": inputs.catalog.n_users,
              "temperature": rc.temperature, "logq_correction": rc.logq_correction,
              "user_index": "row of user_ids.npy, -1 = unknown", "history": "item_ids.npy rows, newest first, -1 pad"}
    version = version or ModelStore.new_version_id()
    with store.write_version(RETRIEVAL_NAME, version, kind="retrieval", metrics=metrics, params=params,
                             data_hash=inputs.dataset.content_hash()) as d:
        write_two_tower(d, trained.model.user_tower, emb, inputs.catalog, config, rc.faiss_hnsw_threshold)
    mv = store.get(RETRIEVAL_NAME, version)
    # round-trip check: the TorchScript file must reproduce the trained tower
    loaded = TwoTowerRecommender.load(store.local_path(mv))
    probe = np.arange(min(8, inputs.catalog.n_users))
    hist = user_histories(inputs.split.train, inputs.catalog, rc.history_length)[probe]
    live = TwoTowerRecommender(trained.model.user_tower, emb, hist)
    loaded.histories = hist
    if not np.allclose(live.user_embeddings(probe), loaded.user_embeddings(probe), atol=1e-5):
        raise RuntimeError("exported user_tower.pt does not reproduce the trained user tower")
    if promote:
        store.promote(RETRIEVAL_NAME, mv.version)
    _echo(f"[two_tower] trained in {trained.seconds:.1f}s -> {RETRIEVAL_NAME}/{mv.version}"
          f"{' (promoted)' if promote else ''}", progress)
    return mv


def resolve_version(store: ModelStore, name: str, version: str | None) -> ModelVersion:
    """Named version, else the promoted one, else the newest."""
    try:
        if version is not None:
            return store.get(name, version)
        if store.promoted(name):
            return store.get(name)
        versions = store.list_versions(name)
        if not versions:
            raise TrainingInputError(f"no {name} model in {store.root}: train it first (`recsys train ...`)")
        return versions[-1]
    except ModelStoreError as e:
        raise TrainingInputError(str(e)) from e


def _feature_source(cfg: TrainingConfig, inputs: Inputs, kind: str | None = None, history: pd.DataFrame | None = None):
    """The Feast source when asked for (or ``auto`` and built from this dataset), else None (inline per frame).

    ``auto`` picks inline when ``history`` hides events the store holds (a per-user split: the store would
    leak held-out events); ``feast`` then fails in :class:`RankingContext` with :class:`FeatureLeakError`.
    """
    from recsys.training.ranking.context import hidden_events_before
    from recsys.training.ranking.features import FeastFeatureSource, make_feature_source

    kind = kind or cfg.ranking.feature_source
    if kind == "inline":
        return None
    t_ns = int(history["timestamp"].max().value) + 1 if history is not None and len(history) else 0
    if kind == "auto" and t_ns and hidden_events_before(inputs.dataset, history, t_ns) > 0:
        return None
    fs_cfg = None
    try:
        from recsys.features.config import FeatureStoreConfig

        fs_cfg = FeatureStoreConfig(repo_dir=cfg.feature_repo_dir, redis_url=cfg.redis_url)
    except ImportError:
        pass
    source = make_feature_source(kind, inputs.dataset, fs_cfg)
    return source if isinstance(source, FeastFeatureSource) else None


def _two_tower_at(store: ModelStore, tt_mv: ModelVersion, history: pd.DataFrame, catalog: Catalog):
    """The stored two-tower model reading user histories from ``history`` (fold-in, as serving does)."""
    from recsys.training.two_tower.artifacts import TwoTowerRecommender

    path = store.local_path(tt_mv)
    tt_cfg = json.loads((path / "config.json").read_text())
    return TwoTowerRecommender.load(path, histories=user_histories(history, catalog, int(tt_cfg["history_length"])))


SEQUENTIAL_NAME = "sasrec"
_CONTENT_CACHE: dict[int, tuple[Dataset, tuple[np.ndarray, np.ndarray]]] = {}


def sequential_for_ranker(store: ModelStore, inputs: Inputs, version: str | None) -> ModelVersion | None:
    """The SASRec version whose candidates and scores the ranker learns from (serving's ``sequential`` source).

    An explicit ``version``; else the promoted ``sasrec`` when it was trained on this dataset (what
    serving would merge); else None (the ranker then has no SASRec candidates or columns).
    """
    if version:
        return store.get(SEQUENTIAL_NAME, version)
    promoted = store.promoted(SEQUENTIAL_NAME)
    if not promoted:
        return None
    mv = store.get(SEQUENTIAL_NAME, promoted)
    return mv if mv.metadata.get("data_hash") == inputs.dataset.content_hash() else None


def content_vectors(inputs: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The catalog's content vectors (serving's content index encoder), computed once per dataset object."""
    from recsys.training.ranking.context import content_matrix

    hit = _CONTENT_CACHE.get(id(inputs.dataset))
    if hit is None or hit[0] is not inputs.dataset:
        _CONTENT_CACHE.clear()
        hit = _CONTENT_CACHE[id(inputs.dataset)] = (inputs.dataset, content_matrix(inputs.dataset, inputs.catalog))
    return hit[1]


def ranking_context(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, tt_mv: ModelVersion,
                    history: pd.DataFrame, rc=None, seq_mv: ModelVersion | None = None):
    """A :class:`RankingContext` as of the end of ``history`` (candidates + features, as serving computes them)."""
    from recsys.training.ranking.context import RankingContext

    rc = rc or cfg.ranking
    return RankingContext(inputs.dataset, history, inputs.catalog, _two_tower_at(store, tt_mv, history, inputs.catalog),
                          rc, knn_neighbors=cfg.baselines.knn_neighbors,
                          store_source=_feature_source(cfg, inputs, history=history),
                          knn_shrinkage=cfg.baselines.knn_shrinkage,
                          sequential=_two_tower_at(store, seq_mv, history, inputs.catalog) if seq_mv else None,
                          content=content_vectors(inputs) if rc.content_candidates else None)


def gate_window_check(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, ranker_mv: ModelVersion,
                      progress: bool = True):
    """Pipeline vs retrieval order on the gate window (the last label window; no ranker trains on it)."""
    from recsys.training.cold_start import ColdStartFallback
    from recsys.training.ranking.data import label_windows, window_targets
    from recsys.training.ranking.gate import compare, decide

    rc = cfg.ranking
    windows = label_windows(inputs.split, rc.label_windows, cfg.seed)
    if not windows:
        raise TrainingInputError("the split has no validation events: no gate window to check the ranker on")
    window = windows[-1]
    rec = load_recommender(store, ranker_mv, inputs, cfg, history=window.history)
    targets = window_targets(window, inputs.catalog, rc, positives_only=False)
    users = np.flatnonzero(np.diff(targets.indptr) > 0)
    sub = targets[users]
    n = max(int(m.split("@")[1]) for m in rc.gate_metrics)
    pipe, _ = rec.recommend(users, rec.ctx.seen, n=max(n, 200))
    retrieval = ColdStartFallback(rec.ctx.retrieval, rec.fallback)  # the same fallback on both sides
    retr, _ = retrieval.recommend(users, rec.ctx.seen, n=max(n, 200))
    paired = compare(pipe[:, :n], retr[:, :n], sub, tuple(rc.gate_metrics), rc.gate_confidence, cfg.seed)
    serving, vs_serving = store.promoted(RANKER_NAME), None
    if serving and serving != ranker_mv.version:  # the pipeline serving now, on the same window
        current = load_recommender(store, store.get(RANKER_NAME, serving), inputs, cfg, history=window.history)
        now, _ = current.recommend(users, current.ctx.seen, n=n)
        vs_serving = compare(pipe[:, :n], now[:, :n], sub, tuple(rc.gate_metrics), rc.gate_confidence, cfg.seed)
    result = decide(window.name, len(users), paired, rc.gate_confidence, vs_serving,
                    f"{RANKER_NAME}/{serving}" if vs_serving else "")
    from recsys.training.ranking.gate import per_user_metrics
    from recsys.training.ranking.pipeline import CandidateRecallRecommender

    merged, _ = CandidateRecallRecommender(rec.ctx).recommend(users, None, n=2000)
    result.candidate_recall = {
        "two_tower_recall@200": float(per_user_metrics(retr, sub, (200,))["recall@200"].mean()),
        "merged_candidates_recall": float(per_user_metrics(merged, sub, (2000,))["recall@2000"].mean()),
    }
    _echo(f"[ranker] {result.summary()}; candidate recall: two-tower@200 "
          f"{result.candidate_recall['two_tower_recall@200']:.4f}, merged "
          f"{result.candidate_recall['merged_candidates_recall']:.4f}", progress)
    return result


def promote_if_gate_passes(store: ModelStore, mv: ModelVersion, gate, progress: bool = True) -> bool:
    """Record the gate result with the version; promote only when it passed (else the previous one stays)."""
    store.add_metrics(mv.name, mv.version, {"gate": gate.as_dict()})
    if gate.passed:
        store.promote(mv.name, mv.version)
        _echo(f"[ranker] gate passed: promoted {mv.name}/{mv.version}", progress)
        return True
    previous = store.promoted(mv.name)
    _echo(f"[ranker] gate REFUSED {mv.name}/{mv.version}: {gate.reason}; still promoted: {previous or 'nothing'} "
          f"(serving ranks by retrieval score when no ranker is promoted)", progress)
    return False


# --------------------------------------------------------------------------------- ranking
def train_ranking(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, version: str | None = None,
                  promote: bool = False, retrieval_version: str | None = None,
                  progress: bool = True, use_ray: bool = True,
                  sequential_version: str | None = None) -> ModelVersion:
    """Listwise ranker on label windows inside validation; ``promote`` goes through the gate.

    Candidates and source columns come from every source serving merges: the two-tower, item-kNN,
    SASRec (:func:`sequential_for_ranker`), content and popularity. ``use_ray=False`` fits in this
    process (same epochs; for experiments on a busy machine).
    """
    import torch

    from recsys.training.ranking.data import build_ranking_examples, label_windows
    from recsys.training.ranking.job import feature_spec, train_ranker
    from recsys.training.two_tower.artifacts import _quiet_jit

    t0 = time.perf_counter()
    rc = cfg.ranking
    tt_mv = resolve_version(store, RETRIEVAL_NAME, retrieval_version)
    windows = label_windows(inputs.split, rc.label_windows, cfg.seed)
    if len(windows) < 2:
        raise TrainingInputError("the split has no validation events: the ranker learns from validation windows")
    train_windows = windows[:-1]
    seq_mv = sequential_for_ranker(store, inputs, sequential_version)
    contexts = [(w, ranking_context(cfg, inputs, store, tt_mv, w.history, seq_mv=seq_mv)) for w in train_windows]
    source_kind = type(contexts[0][1].store).__name__
    examples = build_ranking_examples(contexts, inputs.catalog, rc, cfg.seed)
    n_groups = len(np.unique(examples.group))
    _echo(f"[ranker] {len(examples.label):,} examples in {n_groups:,} lists ({examples.label.mean():.1%} positive) "
          f"from windows {examples.windows}, features from {source_kind}, candidates from "
          f"{RETRIEVAL_NAME}/{tt_mv.version} + item-kNN"
          f"{f' + {SEQUENTIAL_NAME}/{seq_mv.version}' if seq_mv else ''}"
          f"{' + content' if rc.content_candidates else ''} + popularity ({time.perf_counter() - t0:.1f}s)", progress)
    trained = train_ranker(cfg, examples, inputs.catalog.n_items, inputs.catalog.n_users, use_ray=use_ray)
    if trained.dropped:
        _echo(f"[ranker] dropped columns: {trained.dropped}", progress)
    best = trained.best_metrics  # the exported weights are the best validation epoch's, not the last
    metrics = {k: v for k, v in best.items() if k in ("loss", "val_loss", "val_auc", "val_ndcg@20") and v == v}
    params = {**rc.model_dump(), "seed": cfg.seed, "split": cfg.split, "retrieval_version": tt_mv.version,
              "sequential_version": seq_mv.version if seq_mv else None,
              "num_workers": cfg.num_workers, "best_epoch": trained.best_epoch, "feature_source": source_kind,
              "n_examples": trained.n_examples, "n_lists": trained.n_groups,
              "positive_rate": trained.positive_rate, "label_windows": examples.windows,
              "gate_window": windows[-1].name, "dropped_columns": trained.dropped,
              "train_seconds": round(time.perf_counter() - t0, 3), "history": trained.history}
    spec = feature_spec(trained, source_kind, rc, sequential=seq_mv is not None)
    version = version or ModelStore.new_version_id()
    with store.write_version(RANKER_NAME, version, kind="ranking", metrics=metrics, params=params,
                             data_hash=inputs.dataset.content_hash()) as d, _quiet_jit():
        torch.jit.save(torch.jit.script(trained.model), str(Path(d) / "ranker.pt"))
        (Path(d) / "feature_spec.json").write_text(json.dumps(spec, indent=2))
    mv = store.get(RANKER_NAME, version)
    _echo(f"[ranker] trained in {time.perf_counter() - t0:.1f}s -> {RANKER_NAME}/{mv.version}", progress)
    gate = gate_window_check(cfg, inputs, store, mv, progress)
    if promote:
        promote_if_gate_passes(store, mv, gate, progress)
    else:
        store.add_metrics(mv.name, mv.version, {"gate": gate.as_dict()})
    return store.get(RANKER_NAME, version)


# ------------------------------------------------------------------------------ evaluation
def load_recommender(store: ModelStore, mv: ModelVersion, inputs: Inputs, cfg: TrainingConfig,
                     history: pd.DataFrame | None = None):
    """A Recommender for a stored version; ``history`` = the visible events (default: train + validation, the
    test protocol). Users with no history get recent-window popularity (:mod:`recsys.training.cold_start`)."""
    from recsys.training.cold_start import ColdStartFallback, recent_popularity

    history = inputs.history if history is None else history
    return ColdStartFallback(_load_model(store, mv, inputs, cfg, history), recent_popularity(history, inputs.catalog))


def _load_model(store: ModelStore, mv: ModelVersion, inputs: Inputs, cfg: TrainingConfig, history: pd.DataFrame):
    from recsys.training.two_tower.artifacts import load_torchscript

    path = store.local_path(mv)
    if mv.name == "popularity":
        return PopularityRecommender.load(path)
    if mv.name == "item_knn":
        return ItemKnnRecommender.load(path)
    if mv.name == "als":
        return AlsRecommender.load(path)
    if mv.name == "bpr":
        return BprRecommender.load(path)
    if mv.name == "ease":
        return EaseRecommender.load(path)
    if mv.name in (RETRIEVAL_NAME, SEQUENTIAL_NAME):  # SASRec is stored in the two-tower layout
        return _two_tower_at(store, mv, history, inputs.catalog)
    if mv.name == RANKER_NAME:
        from recsys.training.ranking.pipeline import RetrievalRankerRecommender

        spec = json.loads((path / "feature_spec.json").read_text())
        params = mv.metadata.get("params", {})
        tt_mv = resolve_version(store, RETRIEVAL_NAME, params.get("retrieval_version"))
        seq_mv = store.get(SEQUENTIAL_NAME, params["sequential_version"]) if params.get("sequential_version") else None
        counts = spec.get("candidate_sources", {})
        rc = cfg.ranking.model_copy(update={"candidates": int(counts.get("two_tower", spec.get("candidates", 200))),
                                            "knn_candidates": int(counts.get("item_knn", 0)),
                                            "popularity_candidates": int(counts.get("popularity", 0)),
                                            "sasrec_candidates": int(counts.get("sasrec", 0)),
                                            "content_candidates": int(counts.get("content", 0))})
        ctx = ranking_context(cfg, inputs, store, tt_mv, history, rc, seq_mv=seq_mv)
        return RetrievalRankerRecommender(ctx, load_torchscript(path / "ranker.pt"), list(spec["dense"]),
                                          sparse_names=tuple(s["name"] for s in spec["sparse"]))
    raise TrainingInputError(f"don't know how to evaluate model {mv.name!r}")


def display_name(mv: ModelVersion) -> str:
    return "two_tower->ranker" if mv.name == RANKER_NAME else mv.name


def evaluate_models(cfg: TrainingConfig, inputs: Inputs, store: ModelStore,
                    versions: list[ModelVersion], part: str = "test", progress: bool = True) -> EvaluationReport:
    ec = cfg.evaluation
    ev = Evaluator.from_split(inputs.dataset, inputs.split, inputs.catalog, part=part, ks=ec.k,
                              bootstrap_samples=ec.bootstrap_samples, confidence=ec.confidence, seed=cfg.seed,
                              max_users=ec.max_users, meta={"data_hash": inputs.dataset.content_hash()})
    report = EvaluationReport(meta=dict(ev.meta))
    report.meta["versions"] = {display_name(mv): f"{mv.name}/{mv.version}" for mv in versions}
    for mv in versions:
        t0 = time.perf_counter()
        rec = load_recommender(store, mv, inputs, cfg)
        r = ev.evaluate(display_name(mv), rec, progress=progress)
        r.seconds = time.perf_counter() - t0
        report.models.append(r)
        _echo(f"[evaluate] {display_name(mv)} ({mv.version}): recall@20={r.metrics['recall@20'].value:.4f} "
              f"ndcg@20={r.metrics['ndcg@20'].value:.4f} ({r.seconds:.1f}s)", progress)
    return report


def candidate_recall(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, ranker_mv: ModelVersion,
                     part: str = "test") -> dict[str, float]:
    """The ranker's ceiling on ``part``: two-tower Recall@200 and the recall of the merged candidate lists."""
    from recsys.training.ranking.gate import per_user_metrics
    from recsys.training.ranking.pipeline import CandidateRecallRecommender

    rec = load_recommender(store, ranker_mv, inputs, cfg)
    ev = Evaluator.from_split(inputs.dataset, inputs.split, inputs.catalog, part=part, ks=(20,),
                              bootstrap_samples=10, seed=cfg.seed, max_users=cfg.evaluation.max_users)
    tt = per_user_metrics(ev.recommendations(rec.ctx.retrieval, 200), ev.targets, (200,))["recall@200"]
    merged = per_user_metrics(ev.recommendations(CandidateRecallRecommender(rec.ctx), 1000), ev.targets, (1000,))
    return {"two_tower_recall@200": float(tt.mean()), "merged_candidates_recall": float(merged["recall@1000"].mean())}


def promoted_versions(store: ModelStore, names: tuple[str, ...] = (*BASELINES, RETRIEVAL_NAME, RANKER_NAME)
                      ) -> list[ModelVersion]:
    out = []
    for name in names:
        if store.promoted(name):
            out.append(store.get(name))
    return out


def default_report_path(cfg: TrainingConfig) -> Path:
    return Path(cfg.data_dir).parent / "reports" / f"evaluation-{time.strftime('%Y%m%d-%H%M%S')}.json"


def train_all(cfg: TrainingConfig, store: ModelStore, version: str | None = None, promote: bool = True,
              progress: bool = True, report_path: Path | None = None) -> tuple[EvaluationReport, Path, dict[str, Any]]:
    """Baselines + two-tower + ranker, then evaluate exactly the versions just trained."""
    t0 = time.perf_counter()
    inputs = load_inputs(cfg)
    timings: dict[str, Any] = {}
    versions = list(train_baselines(cfg, inputs, store, version, promote, progress).values())
    timings["baselines_s"] = round(time.perf_counter() - t0, 1)
    versions.append(train_retrieval(cfg, inputs, store, version, promote, progress))
    timings["retrieval_s"] = round(time.perf_counter() - t0 - timings["baselines_s"], 1)
    t1 = time.perf_counter()
    versions.append(train_ranking(cfg, inputs, store, version, promote, retrieval_version=versions[-1].version,
                                  progress=progress))
    timings["ranking_s"] = round(time.perf_counter() - t1, 1)
    t2 = time.perf_counter()
    report = evaluate_models(cfg, inputs, store, versions, progress=progress)
    for mv, r in zip(versions, report.models, strict=True):  # every version keeps its test metrics
        store.add_metrics(mv.name, mv.version, {f"test_{cfg.split}": r.flat()})
    report.meta["candidate_recall"] = ceiling = candidate_recall(cfg, inputs, store, versions[-1])
    store.add_metrics(versions[-1].name, versions[-1].version, {f"test_{cfg.split}_candidates": ceiling})
    _echo(f"[evaluate] ranker ceiling on test: two-tower Recall@200 {ceiling['two_tower_recall@200']:.4f}, "
          f"merged candidates (every source the ranker trains on) "
          f"recall {ceiling['merged_candidates_recall']:.4f}",
          progress)
    timings["evaluate_s"] = round(time.perf_counter() - t2, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    report.meta["timings"] = timings
    path = report.save(report_path or default_report_path(cfg))
    return report, path, timings
