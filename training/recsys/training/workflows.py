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
                    promote: bool = False, progress: bool = True) -> dict[str, ModelVersion]:
    bc = cfg.baselines
    x = interaction_matrix(inputs.history, inputs.catalog)
    item_ids, user_ids = inputs.catalog.items.ids, inputs.catalog.users.ids
    data_hash = inputs.dataset.content_hash()
    out = {}
    for name in BASELINES:
        t0 = time.perf_counter()
        if name == "popularity":
            model, params = PopularityRecommender().fit(x), {}
        elif name == "item_knn":
            model, params = ItemKnnRecommender(bc.knn_neighbors).fit(x), {"neighbors": bc.knn_neighbors}
        elif name == "bpr":
            model = BprRecommender(seed=cfg.seed)
            params = {"factors": model.factors, "learning_rate": model.learning_rate, "epochs": model.epochs,
                      "regularization": model.regularization}
            model.fit(x)
        elif name == "ease":
            model = EaseRecommender()
            params = {"regularization": model.regularization, "keep": model.keep, "max_items": model.max_items}
            try:
                model.fit(x)
            except EaseTooLargeError as e:  # a closed form that does not fit the machine is skipped, not fatal
                _echo(f"[ease] skipped: {e}", progress)
                continue
        else:
            params = {"factors": bc.als_factors, "regularization": bc.als_regularization, "alpha": bc.als_alpha,
                      "iterations": bc.als_iterations, "cg_steps": bc.als_cg_steps}
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
    last = trained.history[-1] if trained.history else {}
    metrics = {k: v for k, v in last.items() if k in ("loss", "val_recall@20")}
    params = {**rc.model_dump(), "seed": cfg.seed, "split": cfg.split, "fit_on": "train",
              "num_workers": cfg.num_workers, "train_seconds": round(trained.seconds, 3), "history": trained.history}
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


def _feature_source(cfg: TrainingConfig, inputs: Inputs, kind: str | None = None):
    from recsys.training.ranking.features import make_feature_source

    fs_cfg = None
    try:
        from recsys.features.config import FeatureStoreConfig

        fs_cfg = FeatureStoreConfig(repo_dir=cfg.feature_repo_dir, redis_url=cfg.redis_url)
    except ImportError:
        pass
    return make_feature_source(kind or cfg.ranking.feature_source, inputs.dataset, fs_cfg)


# --------------------------------------------------------------------------------- ranking
def train_ranking(cfg: TrainingConfig, inputs: Inputs, store: ModelStore, version: str | None = None,
                  promote: bool = False, retrieval_version: str | None = None,
                  progress: bool = True) -> ModelVersion:
    import torch

    from recsys.training.ranking.data import build_ranking_examples
    from recsys.training.ranking.job import feature_spec, train_ranker
    from recsys.training.two_tower.artifacts import TwoTowerRecommender, _quiet_jit

    t0 = time.perf_counter()
    tt_mv = resolve_version(store, RETRIEVAL_NAME, retrieval_version)
    tt_cfg = json.loads((store.local_path(tt_mv) / "config.json").read_text())
    hist = user_histories(inputs.split.train, inputs.catalog, int(tt_cfg["history_length"]))
    retrieval = TwoTowerRecommender.load(store.local_path(tt_mv), histories=hist)
    source = _feature_source(cfg, inputs)
    source_kind = type(source).__name__
    examples = build_ranking_examples(retrieval, inputs.split.train, inputs.split.validation, inputs.catalog,
                                      source, cfg.ranking, cfg.seed, max_users=cfg.ranking.max_users)
    _echo(f"[ranker] {len(examples.label):,} examples ({examples.label.mean():.1%} positive), features from "
          f"{source_kind}, candidates from {RETRIEVAL_NAME}/{tt_mv.version} "
          f"({time.perf_counter() - t0:.1f}s)", progress)
    trained = train_ranker(cfg, examples, inputs.catalog.n_items, inputs.catalog.n_users)
    last = trained.history[-1] if trained.history else {}
    metrics = {k: v for k, v in last.items() if k in ("loss", "val_loss", "val_auc")}
    params = {**cfg.ranking.model_dump(), "seed": cfg.seed, "split": cfg.split, "retrieval_version": tt_mv.version,
              "feature_source": source_kind, "n_examples": trained.n_examples,
              "positive_rate": trained.positive_rate, "label_window": "validation",
              "train_seconds": round(time.perf_counter() - t0, 3), "history": trained.history}
    spec = feature_spec(trained, source_kind, cfg.ranking.candidates)
    version = version or ModelStore.new_version_id()
    with store.write_version(RANKER_NAME, version, kind="ranking", metrics=metrics, params=params,
                             data_hash=inputs.dataset.content_hash()) as d, _quiet_jit():
        torch.jit.save(torch.jit.script(trained.model), str(Path(d) / "ranker.pt"))
        (Path(d) / "feature_spec.json").write_text(json.dumps(spec, indent=2))
    mv = store.get(RANKER_NAME, version)
    if promote:
        store.promote(RANKER_NAME, mv.version)
    _echo(f"[ranker] trained in {time.perf_counter() - t0:.1f}s -> {RANKER_NAME}/{mv.version}"
          f"{' (promoted)' if promote else ''}", progress)
    return mv


# ------------------------------------------------------------------------------ evaluation
def load_recommender(store: ModelStore, mv: ModelVersion, inputs: Inputs, cfg: TrainingConfig):
    """A Recommender for a stored version, set up for the test protocol (history = train + validation)."""
    from recsys.training.two_tower.artifacts import TwoTowerRecommender, load_torchscript

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
    if mv.name == RETRIEVAL_NAME:
        tt_cfg = json.loads((path / "config.json").read_text())
        hist = user_histories(inputs.history, inputs.catalog, int(tt_cfg["history_length"]))
        return TwoTowerRecommender.load(path, histories=hist)
    if mv.name == RANKER_NAME:
        from recsys.training.ranking.pipeline import RetrievalRankerRecommender

        spec = json.loads((path / "feature_spec.json").read_text())
        tt_mv = resolve_version(store, RETRIEVAL_NAME, mv.metadata.get("params", {}).get("retrieval_version"))
        retrieval = load_recommender(store, tt_mv, inputs, cfg)
        kind = "feast" if spec.get("feature_source") == "FeastFeatureSource" else "inline"
        t_test = int(inputs.split.test["timestamp"].min().value)
        ranker = load_torchscript(path / "ranker.pt")
        return RetrievalRankerRecommender(retrieval, ranker, _feature_source(cfg, inputs, kind), inputs.catalog,
                                          t_test, candidates=int(spec.get("candidates", 200)),
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
    timings["evaluate_s"] = round(time.perf_counter() - t2, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    report.meta["timings"] = timings
    path = report.save(report_path or default_report_path(cfg))
    return report, path, timings
