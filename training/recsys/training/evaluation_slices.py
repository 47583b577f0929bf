"""Cold-start slices of the offline evaluation, and the simulated-new-item protocol.

One number for everyone hides how new users and new items are served, so this reports every metric
of :class:`~recsys.training.evaluation.Evaluator` on slices, each with its own bootstrap CI:

* ``cold_users``: users with at most ``cold_max_events`` events before the evaluated window;
* ``warm_users``: the others;
* ``new_items``: targets restricted to items *first seen in the evaluated window* (no event before
  it), over the users who have such a target: can the model recommend what it never saw? Reported
  next to ``new_item_share@K``, the share of recommendation slots holding such items.

:func:`new_item_recovery` is the simulated-new-item protocol: hide ``k_items`` established items
from the history (all but their first ``m`` events), refit each source, and measure how often the
hidden item reaches the top-K of the users who interact with it in the test window, for
``m = 0, 5, 20, ...``: how many interactions each source needs before it can recommend a new item.
:class:`ContentRecommender` (metadata only, the offline twin of serving's content index) needs none.

Run ``python -m recsys.training.evaluation_slices --data-dir data/synthetic`` for the tables in
docs/training.md ("Cold-start slices").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.training.base import Catalog, batched, interaction_matrix, top_n
from recsys.training.evaluation import (
    PER_USER_METRICS,
    Evaluator,
    MetricValue,
    bootstrap_means,
    hit_matrix,
    intra_list_diversity,
    novelty,
    ranking_metrics,
)

SLICES = ("all", "cold_users", "warm_users", "new_items")


class ContentRecommender:
    """Scores items by cosine between the item's content vector and the user's history profile.

    Profile = interaction-weighted sum of the content vectors of the user's items; content vectors
    come from :class:`recsys.serving.pipeline.candidates.content_index.ContentEncoder` (hashed tf-idf + SVD of title,
    genres, year, description), so a brand-new item is scorable from its metadata alone.
    """

    def __init__(self, items: pd.DataFrame, catalog: Catalog, dim: int = 64):
        from recsys.serving.pipeline.candidates.content_index import ContentConfig, ContentEncoder

        rows = catalog.items.index_of(items["item_id"].to_numpy())
        known = items[rows >= 0]
        enc = ContentEncoder(ContentConfig(dim=dim)).fit(known)
        self.vectors = np.zeros((catalog.n_items, enc.dim), np.float32)
        self.vectors[rows[rows >= 0]] = enc.transform(known)

    def fit(self, interactions: sp.csr_matrix) -> ContentRecommender:
        return self  # nothing to learn from interactions: that is the point

    def recommend(self, user_indices, user_items, n: int = 20, filter_already_liked: bool = True):
        users = np.asarray(user_indices, dtype=np.int64)
        profile = np.asarray(user_items[users] @ self.vectors)
        profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
        return top_n(profile @ self.vectors.T, n, user_items if filter_already_liked else None, users)

    def similar_items(self, item_indices, n: int = 20):
        items = np.asarray(item_indices, dtype=np.int64)
        scores = self.vectors[items] @ self.vectors.T
        scores[np.arange(len(items)), items] = -np.inf
        return top_n(scores, n)


# ------------------------------------------------------------------------------ slices
@dataclass
class SliceReport:
    """Metrics per slice for one model: ``metrics[slice]["recall@20"] -> MetricValue``."""

    name: str
    n_users: dict[str, int]
    metrics: dict[str, dict[str, MetricValue]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"n_users": self.n_users,
                "metrics": {s: {k: v.as_dict() for k, v in m.items()} for s, m in self.metrics.items()}}


class SliceEvaluator:
    """Per-slice metrics over the same recommendations an :class:`Evaluator` scores (no model re-run)."""

    def __init__(self, evaluator: Evaluator, new_items: np.ndarray, cold_max_events: int = 5,
                 user_event_counts: np.ndarray | None = None):
        self.ev = evaluator
        counts = user_event_counts
        if counts is None:  # the evaluator's history matrix: distinct items per user
            counts = np.diff(evaluator.user_items.indptr)
        self.user_events = np.asarray(counts)[evaluator.users]
        self.cold_max_events = cold_max_events
        self.new_items = np.asarray(new_items, bool)
        nz = self.ev.targets.tocoo()
        keep = self.new_items[nz.col]
        self.new_targets = sp.csr_matrix((nz.data[keep], (nz.row[keep], nz.col[keep])), shape=self.ev.targets.shape)

    def attach(self) -> list[SliceReport]:
        """Slice every model the evaluator evaluates from now on (its recommendations, no re-run).

        Returns the list the reports are appended to, e.g. for ``recsys evaluate``:
        ``reports = SliceEvaluator(ev, new_items).attach(); evaluate_models(...); slice_table(reports)``.
        """
        reports: list[SliceReport] = []

        def hook(name: str, recs: np.ndarray) -> None:
            reports.append(self.evaluate_recommendations(name, recs))

        self.ev.recommendation_hooks.append(hook)
        return reports

    def slice_rows(self) -> dict[str, np.ndarray]:
        cold = self.user_events <= self.cold_max_events
        return {"all": np.arange(len(self.ev.users)), "cold_users": np.flatnonzero(cold),
                "warm_users": np.flatnonzero(~cold),
                "new_items": np.flatnonzero(np.diff(self.new_targets.indptr) > 0)}

    def _weights(self, n: int, salt: int) -> np.ndarray:
        b = self.ev.bootstrap_samples
        rng = np.random.default_rng(self.ev.seed + 1000 + salt)
        w = np.zeros((b, n))
        if n:
            np.add.at(w, (np.repeat(np.arange(b), n), rng.integers(0, n, size=b * n)), 1.0)
        return w

    def evaluate_recommendations(self, name: str, recs: np.ndarray) -> SliceReport:
        alpha = (1 - self.ev.confidence) / 2
        report = SliceReport(name, {})
        for s_i, (slice_name, rows) in enumerate(self.slice_rows().items()):
            report.n_users[slice_name] = int(len(rows))
            out: dict[str, MetricValue] = {}
            report.metrics[slice_name] = out
            if len(rows) == 0:
                continue
            targets = (self.new_targets if slice_name == "new_items" else self.ev.targets)[rows]
            sub = recs[rows]
            hits = hit_matrix(sub, targets)
            n_t = np.diff(targets.indptr)
            weights = self._weights(len(rows), s_i)
            for k in self.ev.ks:
                per = ranking_metrics(hits, n_t, k)
                per["ild"] = intra_list_diversity(sub[:, :k], self.ev.item_genres)
                per["novelty"] = novelty(sub[:, :k], self.ev.item_probability)
                top = sub[:, :k]
                per["new_item_share"] = ((top >= 0) & self.new_items[np.maximum(top, 0)]).sum(1) / k
                names = [*PER_USER_METRICS, "new_item_share"]
                values = np.stack([per[m] for m in names], axis=1)
                lo, hi = np.quantile(bootstrap_means(values, weights), [alpha, 1 - alpha], axis=0)
                for j, m in enumerate(names):
                    out[f"{m}@{k}"] = MetricValue(float(values[:, j].mean()), float(lo[j]), float(hi[j]))
        return report


def new_items_in_window(history: pd.DataFrame, window: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """[n_items] bool: items with events in ``window`` and none in ``history`` (first seen in the window)."""
    seen = np.zeros(catalog.n_items, bool)
    idx = catalog.items.index_of(history["item_id"].to_numpy())
    seen[idx[idx >= 0]] = True
    in_window = np.zeros(catalog.n_items, bool)
    idx = catalog.items.index_of(window["item_id"].to_numpy())
    in_window[idx[idx >= 0]] = True
    return in_window & ~seen


def user_event_counts(history: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """[n_users] number of history events (all types) per user index."""
    idx = catalog.users.index_of(history["user_id"].to_numpy())
    return np.bincount(idx[idx >= 0], minlength=catalog.n_users)


def slice_table(reports: list[SliceReport], k: int = 20,
                metrics: tuple[str, ...] = ("recall", "ndcg", "hit_rate", "new_item_share")) -> str:
    """Markdown: one row per (model, slice), ``value [lo, hi]`` per metric at cut-off ``k``."""
    head = "| model | slice | users | " + " | ".join(f"{m}@{k}" for m in metrics) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(metrics)]
    for r in reports:
        for s in SLICES:
            m = r.metrics.get(s, {})
            cells = []
            for name in metrics:
                v = m.get(f"{name}@{k}")
                cells.append("-" if v is None else f"{v.value:.4f} [{v.lo:.4f}, {v.hi:.4f}]")
            lines.append(f"| {r.name} | {s} | {r.n_users.get(s, 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ simulated new items
@dataclass(frozen=True)
class RecoveryPoint:
    source: str
    interactions: int  # events of each hidden item kept in the history
    recall: float  # share of (test user, hidden item) pairs with the item in the user's top-K
    lo: float
    hi: float
    pairs: int


def new_item_recovery(history: pd.DataFrame, test: pd.DataFrame, catalog: Catalog,
                      sources: dict[str, object], *, k_items: int = 50, steps: tuple[int, ...] = (0, 5, 20, 50),
                      k: int = 20, min_test_users: int = 3, seed: int = 0, bootstrap_samples: int = 300,
                      confidence: float = 0.95) -> list[RecoveryPoint]:
    """Hide ``k_items`` items (all but their first ``m`` events), refit each source, measure recall@K of them.

    Hidden items are drawn (seeded) among items with at least ``max(steps)`` history events and at
    least ``min_test_users`` test users who never touched them before. ``sources`` maps a name to an
    unfitted Recommender (fitted once per step on the reduced history). CIs: bootstrap over pairs.
    """
    rng = np.random.default_rng(seed)
    h_items = catalog.items.index_of(history["item_id"].to_numpy())
    h_count = np.bincount(h_items[h_items >= 0], minlength=catalog.n_items)
    hist_pairs = set(zip(catalog.users.index_of(history["user_id"].to_numpy()).tolist(), h_items.tolist(),
                         strict=True))
    t_users = catalog.users.index_of(test["user_id"].to_numpy())
    t_items = catalog.items.index_of(test["item_id"].to_numpy())
    pairs = {(u, i) for u, i in zip(t_users.tolist(), t_items.tolist(), strict=True)
             if u >= 0 and i >= 0 and (u, i) not in hist_pairs}
    test_users_of: dict[int, set[int]] = {}
    for u, i in pairs:
        test_users_of.setdefault(i, set()).add(u)
    eligible = [i for i, us in test_users_of.items() if len(us) >= min_test_users and h_count[i] >= max(steps)]
    if not eligible:
        raise ValueError("no item qualifies as a hidden item: lower min_test_users or the steps")
    hidden = np.sort(rng.choice(eligible, size=min(k_items, len(eligible)), replace=False))
    hidden_set = set(hidden.tolist())
    ordered = history.assign(_i=h_items).sort_values("timestamp", kind="stable")
    rank = ordered.groupby("_i").cumcount().to_numpy()
    is_hidden = ordered["_i"].isin(hidden_set).to_numpy()
    eval_pairs = sorted((u, i) for i in hidden_set for u in test_users_of[i])
    users = np.unique([u for u, _ in eval_pairs])
    pos = {u: j for j, u in enumerate(users)}
    alpha = (1 - confidence) / 2
    out: list[RecoveryPoint] = []
    for m in steps:
        reduced = ordered[~is_hidden | (rank < m)]
        x = interaction_matrix(reduced, catalog)
        for name, model in sources.items():
            model.fit(x)
            recs = np.full((len(users), k), -1, np.int64)
            for sl in batched(len(users), 1024):
                idx, _ = model.recommend(users[sl], x, n=k, filter_already_liked=True)
                recs[sl, : idx.shape[1]] = idx[:, :k]
            hit = np.array([i in recs[pos[u]] for u, i in eval_pairs], np.float64)
            b = rng.integers(0, len(hit), size=(bootstrap_samples, len(hit)))
            lo, hi = np.quantile(hit[b].mean(1), [alpha, 1 - alpha])
            out.append(RecoveryPoint(name, m, float(hit.mean()), float(lo), float(hi), len(hit)))
    return out


def recovery_table(points: list[RecoveryPoint]) -> str:
    steps = sorted({p.interactions for p in points})
    names = list(dict.fromkeys(p.source for p in points))
    lines = ["| source | " + " | ".join(f"{m} events kept" for m in steps) + " |",
             "|---|" + "---:|" * len(steps)]
    for n in names:
        cells = [next((f"{p.recall:.3f} [{p.lo:.3f}, {p.hi:.3f}]" for p in points
                       if p.source == n and p.interactions == m), "-") for m in steps]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The docs' cold-start tables: slices for popularity, item-kNN, ALS and content, then recovery."""
    import argparse

    from recsys.platform.data.schema import Dataset
    from recsys.platform.data.split import split_events
    from recsys.training.baselines import AlsRecommender, ItemKnnRecommender, PopularityRecommender

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--cold-max-events", type=int, default=5)
    p.add_argument("--max-users", type=int, default=None)
    p.add_argument("--hidden-items", type=int, default=50)
    p.add_argument("--steps", default="0,25,100,400", help="events of each hidden item kept, comma-separated")
    p.add_argument("--part", choices=("test", "validation"), default="test")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    ds = Dataset.load(args.data_dir)
    split = split_events(ds.events, "global_time")
    catalog = Catalog.from_dataset(ds)
    history = split.train if args.part == "validation" else pd.concat([split.train, split.validation])
    window = split.validation if args.part == "validation" else split.test
    ev = Evaluator.from_split(ds, split, catalog, part=args.part, seed=args.seed, max_users=args.max_users,
                              bootstrap_samples=300)
    sl = SliceEvaluator(ev, new_items_in_window(history, window, catalog), args.cold_max_events,
                        user_event_counts(history, catalog))
    x = interaction_matrix(history, catalog)

    def sources() -> dict[str, object]:
        return {"popularity": PopularityRecommender(), "item_knn": ItemKnnRecommender(100),
                "als": AlsRecommender(factors=64, iterations=12, seed=args.seed),
                "content": ContentRecommender(ds.items, catalog)}

    reports = []
    for name, model in sources().items():
        model.fit(x)
        reports.append(sl.evaluate_recommendations(name, ev.recommendations(model, max(ev.ks))))
    print(f"{ds.name}: split=global_time part={args.part}, {len(ev.users)} users, cold = <= {args.cold_max_events} "
          f"history events, {int(sl.new_items.sum())} items first seen in the window; 95% bootstrap CIs\n")
    print(slice_table(reports))
    steps = tuple(int(x) for x in args.steps.split(","))
    points = new_item_recovery(history, window, catalog, sources(), k_items=args.hidden_items, steps=steps,
                               seed=args.seed)
    print(f"\nsimulated new items: {args.hidden_items} items hidden, recall@20 of them among their test users\n")
    print(recovery_table(points))
    print(f"\n({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
