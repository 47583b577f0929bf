"""Promotion gate: a ranker ships only if it beats retrieval order, and is not worse than the pipeline
serving now, on a window it never saw.

Each comparison is paired (same users, same targets, same history): per user, the new pipeline's metric
minus the other list's, then a percentile bootstrap CI of the mean difference (``scipy.stats.bootstrap``).
Against **retrieval order** the lower bound must be above zero for every gate metric (the ranker must earn
its place). When a ranker is already promoted, the new pipeline is also compared with **the pipeline
serving now** (the promoted ranker over the same candidates): no point estimate below zero and no CI
entirely below zero, so a retrained ranker that is not worse replaces the older one and a worse one does
not. Otherwise the previous version stays promoted — or, when none was, serving ranks by retrieval score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy import stats

from recsys.training.evaluation import hit_matrix, ranking_metrics


@dataclass
class PairedMetric:
    pipeline: float
    retrieval: float
    diff: float
    lo: float
    hi: float


@dataclass
class GateResult:
    passed: bool
    window: str
    n_users: int
    confidence: float
    metrics: dict[str, PairedMetric] = field(default_factory=dict)
    reason: str = ""
    candidate_recall: dict[str, float] = field(default_factory=dict)
    serving: str = ""  # "ranker/<version>" compared against, when one was promoted
    vs_serving: dict[str, PairedMetric] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"{m} {v.pipeline:.4f} vs {v.retrieval:.4f} (diff {v.diff:+.4f}, CI [{v.lo:+.4f}, {v.hi:+.4f}])"
                 for m, v in self.metrics.items()]
        out = f"gate on {self.window} ({self.n_users} users) vs retrieval order: " + "; ".join(parts)
        if self.serving:
            out += f"; vs {self.serving} (serving now): " + "; ".join(
                f"{m} diff {v.diff:+.4f} [{v.lo:+.4f}, {v.hi:+.4f}]" for m, v in self.vs_serving.items())
        return out


def per_user_metrics(recs: np.ndarray, targets: sp.csr_matrix, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``{"recall@20": [U], "ndcg@20": [U], ...}`` for rows of ``recs`` against rows of ``targets``."""
    hits = hit_matrix(recs, targets)
    n_t = np.diff(targets.indptr)
    out = {}
    for k in ks:
        for name, v in ranking_metrics(hits, n_t, k).items():
            out[f"{name}@{k}"] = v
    return out


def paired_ci(a: np.ndarray, b: np.ndarray, confidence: float, seed: int) -> PairedMetric:
    """Mean of a, of b, and the percentile-bootstrap CI of mean(a - b) over users."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mean = float(d.mean()) if len(d) else 0.0
    if len(d) < 2 or np.all(d == d[0]):
        lo = hi = mean
    else:
        res = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                              random_state=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return PairedMetric(pipeline=float(np.mean(a)) if len(a) else 0.0, retrieval=float(np.mean(b)) if len(b) else 0.0,
                        diff=mean, lo=lo, hi=hi)


def compare(pipeline_recs: np.ndarray, retrieval_recs: np.ndarray, targets: sp.csr_matrix,
            metrics: tuple[str, ...], confidence: float, seed: int) -> dict[str, PairedMetric]:
    """Paired comparison of two [U, n] recommendation arrays on the same target rows."""
    ks = tuple(sorted({int(m.split("@")[1]) for m in metrics}))
    a = per_user_metrics(pipeline_recs, targets, ks)
    b = per_user_metrics(retrieval_recs, targets, ks)
    return {m: paired_ci(a[m], b[m], confidence, seed) for m in metrics}


def decide(window: str, n_users: int, paired: dict[str, PairedMetric], confidence: float,
           vs_serving: dict[str, PairedMetric] | None = None, serving: str = "") -> GateResult:
    """Pass iff every CI lower bound against retrieval order is above zero and, when a ranker serves now,
    every difference to it is >= 0 with a CI upper bound above zero (module docstring)."""
    losing = [m for m, v in paired.items() if not v.lo > 0]
    worse = [m for m, v in (vs_serving or {}).items() if v.diff < 0 or not v.hi > 0]
    if losing:
        reason = "CI of the difference does not exclude zero (or the pipeline loses) on " + ", ".join(losing)
    elif worse:
        reason = f"worse than {serving} (serving now) on " + ", ".join(worse)
    else:
        reason = "pipeline beats retrieval order on every gate metric" + (
            f" and is not worse than {serving} (serving now)" if serving else "")
    return GateResult(passed=not losing and not worse, window=window, n_users=n_users, confidence=confidence,
                      metrics=paired, reason=reason, serving=serving, vs_serving=dict(vs_serving or {}))
