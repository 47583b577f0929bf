"""Offline evaluation: one evaluator, every model, bootstrap confidence intervals over users.

Metrics at each cut-off K (per user, then averaged over evaluated users):

* ``recall@K``   = |top-K ∩ T| / |T|
* ``ndcg@K``     = DCG / IDCG with binary gains, DCG = sum_hits 1/log2(rank+1), IDCG over min(|T|, K) slots
* ``map@K``      = (1 / min(|T|, K)) * sum over hit ranks r of precision@r
* ``mrr@K``      = 1 / rank of the first hit in the top-K (0 when none)
* ``hit_rate@K`` = 1 if any hit
* ``coverage@K`` = |union of all top-K lists| / catalog size (a set metric, bootstrapped by resampling
  users; a resample holds only ~63% distinct users, so its coverage is biased low and a plain
  percentile interval lay entirely *below* the point estimate: the interval reported is the
  bootstrap distribution's spread re-centred on the point estimate, ``cov + (q - median(boot))``)
* ``ild@K``      = intra-list diversity, *genre-based*: mean over item pairs in the list of
  1 - cosine(genre multi-hot vectors)
* ``novelty@K``  = mean self-information -log2 p(i) of recommended items, p(i) = (users who
  interacted with i + 1) / (users with any history + 1) in the data the models were fitted on

T is the user's held-out items minus anything already in their history (``Split.targets``), and
recommendations filter the history, so re-recommending consumed items never counts.  Confidence
intervals: percentile bootstrap over users (seeded), all metrics from the same resamples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.platform.data.schema import genre_vocabulary
from recsys.training.base import Catalog, batched

PER_USER_METRICS = ("recall", "ndcg", "map", "mrr", "hit_rate", "ild", "novelty")
SET_METRICS = ("coverage",)
TABLE_METRICS = ("recall", "ndcg", "map", "mrr", "hit_rate", "coverage", "ild", "novelty")


# ------------------------------------------------------------------ per-user metric kernels
def hit_matrix(recs: np.ndarray, targets: sp.csr_matrix) -> np.ndarray:
    """[U, K] bool: recs[u, r] is in row u of ``targets`` (padding -1 never hits)."""
    n_items = targets.shape[1]
    t = targets.tocoo()
    target_codes = np.sort(t.row.astype(np.int64) * n_items + t.col)
    codes = np.arange(recs.shape[0], dtype=np.int64)[:, None] * n_items + np.maximum(recs, 0)
    pos = np.searchsorted(target_codes, codes)
    pos = np.minimum(pos, max(len(target_codes) - 1, 0))
    found = target_codes[pos] == codes if len(target_codes) else np.zeros(codes.shape, bool)
    return found & (recs >= 0)


def ranking_metrics(hits: np.ndarray, n_targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user recall/ndcg/map/mrr/hit_rate at ``k`` from a [U, >=k] hit matrix and |T| per user."""
    h = hits[:, :k].astype(np.float64)
    n_t = np.asarray(n_targets, dtype=np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    disc = 1.0 / np.log2(ranks + 1.0)
    ideal_len = np.minimum(n_t, k).astype(np.int64)
    idcg = np.concatenate([[0.0], np.cumsum(disc)])[ideal_len]
    n_hits = h.sum(axis=1)
    precision_at = np.cumsum(h, axis=1) / ranks
    first = np.where(h.any(axis=1), h.argmax(axis=1) + 1, 0)
    safe = np.maximum(ideal_len, 1)
    return {
        "recall": np.where(n_t > 0, n_hits / np.maximum(n_t, 1), 0.0),
        "ndcg": np.where(idcg > 0, (h * disc).sum(axis=1) / np.maximum(idcg, 1e-12), 0.0),
        "map": (precision_at * h).sum(axis=1) / safe,
        "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0),
        "hit_rate": (n_hits > 0).astype(np.float64),
    }


def intra_list_diversity(recs: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """Per-user mean pairwise (1 - cosine) of ``item_vectors`` rows over valid slots of ``recs``."""
    norm = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    valid = recs >= 0
    e = norm[np.maximum(recs, 0)] * valid[..., None]
    sims = np.einsum("ukg,ulg->ukl", e, e)
    m = valid.sum(axis=1).astype(np.float64)
    pairs = m * (m - 1)
    off_diag_sim = sims.sum(axis=(1, 2)) - np.einsum("ukk->u", sims)
    return np.where(pairs > 0, (pairs - off_diag_sim) / np.maximum(pairs, 1), 0.0)


def novelty(recs: np.ndarray, item_probability: np.ndarray) -> np.ndarray:
    """Per-user mean self-information -log2 p(i) over valid slots."""
    valid = recs >= 0
    info = -np.log2(item_probability[np.maximum(recs, 0)]) * valid
    return info.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def coverage_interval(point: float, boot: np.ndarray, alpha: float) -> tuple[float, float]:
    """CI of a set metric whose resamples are biased low: the bootstrap quantiles shifted so their
    median sits on ``point`` (contains ``point`` by construction), clipped to [0, 1]."""
    lo, med, hi = np.quantile(boot, [alpha, 0.5, 1 - alpha])
    return float(max(point + lo - med, 0.0)), float(min(point + hi - med, 1.0))


def bootstrap_means(per_user: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, M] means of per-user [U, M] values under bootstrap count weights [B, U]."""
    return (weights @ per_user) / weights.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- protocol
class ProtocolError(ValueError):
    """Evaluating this model this way would score it on data it was fitted or tuned on."""


def check_protocol(name: str, params: dict, split: str, part: str) -> None:
    """Refuse evaluations that leak: another split than the model's, or validation targets it saw.

    ``params`` is the model version's stored ``params``: ``split`` (protocol it was trained on),
    ``fit_on`` (``train`` or ``train+validation``) and, for the ranker, ``label_window``.
    """
    trained_split = params.get("split")
    if trained_split is None:
        raise ProtocolError(f"{name}: the version does not record the split it was trained on; retrain it "
                            "(`recsys train ...`) before evaluating")
    if trained_split != split:
        raise ProtocolError(f"{name} was trained on the {trained_split} split; evaluating it on {split} would "
                            f"score it on events it trained on (use --split {trained_split} or retrain)")
    if part == "validation":
        fit_on = params.get("fit_on")
        if fit_on != "train" or params.get("label_window") == "validation":
            seen = params.get("label_window") or fit_on or "unrecorded data"
            raise ProtocolError(f"{name} was fitted on {seen}, which includes the validation targets; "
                                "evaluate it with --part test, or evaluate a model trained on train only")


# ------------------------------------------------------------------------------ evaluator
@dataclass
class MetricValue:
    value: float
    lo: float
    hi: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


@dataclass
class ModelReport:
    name: str
    metrics: dict[str, MetricValue]
    n_users: int
    seconds: float = 0.0

    def flat(self) -> dict[str, float]:
        """``{"recall@20": 0.12, ...}`` for model-store metadata."""
        return {k: round(v.value, 6) for k, v in self.metrics.items()}


@dataclass
class EvaluationReport:
    models: list[ModelReport] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "meta": self.meta,
            "models": {
                m.name: {"n_users": m.n_users, "seconds": round(m.seconds, 3),
                         "metrics": {k: v.as_dict() for k, v in m.metrics.items()}}
                for m in self.models
            },
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    def table(self, k: int | None = None) -> str:
        """Plain-text aligned table: one row per model, ``value ±half-CI`` per metric at cut-off ``k``."""
        if not self.models:
            return "(no models evaluated)"
        ks = sorted({int(name.split("@")[1]) for m in self.models for name in m.metrics if "@" in name})
        k = k or (20 if 20 in ks else ks[-1])
        cols = [f"{m}@{k}" for m in TABLE_METRICS]
        header = ["model", *cols]
        rows = []
        for m in self.models:
            row = [m.name]
            for c in cols:
                v = m.metrics.get(c)
                row.append("-" if v is None else f"{v.value:.4f} ±{(v.hi - v.lo) / 2:.4f}")
            rows.append(row)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                                 strict=True)))]
        lines.append("  ".join("-" * w for w in widths))
        for r in rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        conf = self.meta.get("confidence", 0.95)
        lines.append(f"({self.meta.get('n_users', '?')} users, split={self.meta.get('split', '?')}, "
                     f"part={self.meta.get('part', '?')}; ± = half-width of the {conf:.0%} bootstrap CI; "
                     "ild = genre-based)")
        return "\n".join(lines)


def genre_matrix(items: pd.DataFrame, catalog: Catalog) -> tuple[np.ndarray, list[str]]:
    """[n_items, n_genres] float32 multi-hot in catalog order (used by ILD and the models)."""
    vocab = genre_vocabulary(items)
    pos = {g: j for j, g in enumerate(vocab)}
    out = np.zeros((catalog.n_items, len(vocab)), dtype=np.float32)
    idx = catalog.items.index_of(items["item_id"].to_numpy())
    for row, genres in zip(idx, items["genres"].astype(str), strict=True):
        if row < 0:
            continue
        for g in genres.split("|"):
            if g in pos:
                out[row, pos[g]] = 1.0
    return out, vocab


class Evaluator:
    """Scores any :class:`~recsys.training.base.Recommender` on the same users, targets and history."""

    def __init__(
        self,
        user_items: sp.csr_matrix,
        targets: dict[int, np.ndarray],
        item_genres: np.ndarray,
        ks: tuple[int, ...] = (10, 20),
        bootstrap_samples: int = 500,
        confidence: float = 0.95,
        seed: int = 42,
        max_users: int | None = None,
        batch_size: int = 1024,
        meta: dict | None = None,
    ):
        self.user_items = user_items.tocsr()
        users = np.array(sorted(u for u, t in targets.items() if len(t)), dtype=np.int64)
        rng = np.random.default_rng(seed)
        if max_users is not None and len(users) > max_users:
            users = np.sort(rng.choice(users, size=max_users, replace=False))
        if len(users) == 0:
            raise ValueError("no users with held-out targets to evaluate")
        self.users = users
        n_items = user_items.shape[1]
        rows = np.concatenate([np.full(len(targets[u]), j) for j, u in enumerate(users)])
        cols = np.concatenate([targets[u] for u in users])
        self.targets = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(users), n_items))
        self.n_targets = np.diff(self.targets.indptr)
        self.item_genres = item_genres
        n_hist_users = max(int((np.diff(self.user_items.indptr) > 0).sum()), 1)
        users_per_item = np.asarray((self.user_items > 0).sum(axis=0)).ravel()
        self.item_probability = (users_per_item + 1.0) / (n_hist_users + 1.0)
        self.ks = tuple(sorted(ks))
        self.bootstrap_samples, self.confidence, self.seed = bootstrap_samples, confidence, seed
        self.batch_size = batch_size
        self.recommendation_hooks: list = []  # f(name, recs) per evaluated model (evaluation_slices.SliceEvaluator)
        self.meta = {"n_users": int(len(users)), "ks": list(self.ks), "bootstrap_samples": bootstrap_samples,
                     "confidence": confidence, "seed": seed, **(meta or {})}
        boot_rng = np.random.default_rng(seed + 1)
        draws = boot_rng.integers(0, len(users), size=(bootstrap_samples, len(users)))
        self._weights = np.zeros((bootstrap_samples, len(users)), dtype=np.float64)
        np.add.at(self._weights, (np.repeat(np.arange(bootstrap_samples), len(users)), draws.ravel()), 1.0)

    @classmethod
    def from_split(cls, dataset, split, catalog: Catalog, part: str = "test", **kwargs) -> Evaluator:
        """History = everything before ``part`` (train, + validation for test); targets = ``split.targets``."""
        from recsys.training.base import interaction_matrix

        history = split.train if part == "validation" else pd.concat([split.train, split.validation])
        user_items = interaction_matrix(history, catalog)
        raw_targets = split.targets(part)
        uidx = catalog.users.index_of(np.fromiter(raw_targets.keys(), dtype=np.int64, count=len(raw_targets)))
        targets = {}
        for u, items in zip(uidx, raw_targets.values(), strict=True):
            ii = catalog.items.index_of(items)
            if u >= 0 and (ii >= 0).any():
                targets[int(u)] = ii[ii >= 0]
        genres, _ = genre_matrix(dataset.items, catalog)
        meta = {"split": split.protocol, "part": part, **kwargs.pop("meta", {})}
        return cls(user_items, targets, genres, meta=meta, **kwargs)

    def recommendations(self, model, n: int, progress: bool = False) -> np.ndarray:
        out = np.full((len(self.users), n), -1, dtype=np.int64)
        for sl in tqdm(list(batched(len(self.users), self.batch_size)), desc="recommending", disable=not progress,
                       leave=False):
            idx, _ = model.recommend(self.users[sl], self.user_items, n=n, filter_already_liked=True)
            out[sl, : idx.shape[1]] = idx[:, :n]
        return out

    def evaluate_recommendations(self, name: str, recs: np.ndarray, seconds: float = 0.0) -> ModelReport:
        alpha = (1 - self.confidence) / 2
        metrics: dict[str, MetricValue] = {}
        names = list(PER_USER_METRICS)
        for k in self.ks:
            top = recs[:, :k]
            values = np.concatenate([self._per_user(recs[sl], sl, k, names)
                                     for sl in batched(len(self.users), self.batch_size)])
            boot = bootstrap_means(values, self._weights)
            lo, hi = np.quantile(boot, [alpha, 1 - alpha], axis=0)
            for j, m in enumerate(names):
                metrics[f"{m}@{k}"] = MetricValue(float(values[:, j].mean()), float(lo[j]), float(hi[j]))
            # coverage: share of the catalog in the union of lists; bootstrap via which users are drawn
            valid = top >= 0
            rows = np.repeat(np.arange(len(top)), k).reshape(top.shape)[valid]
            inc = sp.csr_matrix((np.ones(valid.sum(), np.float32), (top[valid], rows)),
                                shape=(self.targets.shape[1], len(top)))
            n_items = self.targets.shape[1]
            cov = float((np.asarray(inc.sum(axis=1)).ravel() > 0).sum() / n_items)
            covered = np.asarray(inc @ (self._weights.T > 0).astype(np.float32)) > 0
            cov_boot = covered.sum(axis=0) / n_items
            c_lo, c_hi = coverage_interval(cov, cov_boot, alpha)
            metrics[f"coverage@{k}"] = MetricValue(cov, c_lo, c_hi)
        return ModelReport(name=name, metrics=metrics, n_users=len(self.users), seconds=seconds)

    def _per_user(self, recs: np.ndarray, sl: slice, k: int, names: list[str]) -> np.ndarray:
        """[users in ``sl``, metrics] at ``k``: one batch at a time, so the [U, K, K] diversity block and the
        hit matrix stay the size of a batch (tests/training/test_scale_limits.py: batched == unbatched)."""
        hits = hit_matrix(recs, self.targets[sl])
        top = recs[:, :k]
        per_user = ranking_metrics(hits, self.n_targets[sl], k)
        per_user["ild"] = intra_list_diversity(top, self.item_genres)
        per_user["novelty"] = novelty(top, self.item_probability)
        return np.stack([per_user[m] for m in names], axis=1)

    def evaluate(self, name: str, model, progress: bool = False) -> ModelReport:
        import time

        t0 = time.perf_counter()
        recs = self.recommendations(model, max(self.ks), progress=progress)
        for hook in self.recommendation_hooks:
            hook(name, recs)
        return self.evaluate_recommendations(name, recs, seconds=time.perf_counter() - t0)

    def evaluate_all(self, models: dict, progress: bool = False) -> EvaluationReport:
        report = EvaluationReport(meta=dict(self.meta))
        for name, model in models.items():
            report.models.append(self.evaluate(name, model, progress=progress))
        return report
