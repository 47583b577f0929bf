"""CUPED: each metric adjusted by the same unit's value of it before the experiment started.

Deng, Xu, Kohavi & Walker (2013), "Improving the sensitivity of online controlled experiments by
utilizing pre-experiment data"; the form Microsoft's ExP, Eppo, GrowthBook and Statsig use. For a
unit-level metric ``Y`` and its pre-period value ``X``::

    Ŷ_arm = Ȳ_arm − θ (X̄_arm − X̄_all),    θ = Cov(Y, X) / Var(X)  (pooled within arms)
    Var(Ŷ_arm) = Var(Y − θX) / n_arm     = (1 − ρ²) Var(Y) / n_arm

X is fixed before assignment, so ``E[X̄_T − X̄_C] = 0`` and the difference stays unbiased whatever θ
is; the variance shrinks by the squared correlation ρ² (units with no pre-period traffic have X = 0).
CTR is a ratio, so ``Y`` is its delta-method linearisation ``(clicks − R·exposures) / mean exposures``
(Deng et al. 2018) and X the same linearisation of the pre-period clicks and exposures. θ is
re-estimated at each look from the units present then; both sequential tests take the adjusted
estimate and variance like any other asymptotically normal difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.experiments.exposure_log import LogFrames

# columns of the per-unit pre-period array
PRE_EXPOSURES, PRE_CLICKS, PRE_PURCHASES, PRE_REWARD = range(4)


def pre_period_covariates(
    frames: LogFrames,
    unit_ids: np.ndarray,
    window: tuple[float, float],
    reward_events: tuple[str, ...] | list[str],
) -> np.ndarray:
    """Per unit (rows in ``unit_ids`` order): exposures, clicks, purchases and reward in ``[lo, hi)``.

    Any experiment's traffic counts (and the holdout's); a request logged once per layer counts once.
    """
    lo, hi = window
    out = np.zeros((len(unit_ids), 4))
    index = pd.Index(unit_ids)
    ex = frames.exposures
    ex = ex[(ex["ts"] >= lo) & (ex["ts"] < hi)].drop_duplicates(subset=["unit_id", "request_id"])
    rows = index.get_indexer(ex["unit_id"].to_numpy(dtype=object))
    rows = rows[rows >= 0]
    out[:, PRE_EXPOSURES] = np.bincount(rows, minlength=len(unit_ids))
    oc = frames.outcomes
    oc = oc[(oc["ts"] >= lo) & (oc["ts"] < hi)]
    rows = index.get_indexer(oc["unit_id"].to_numpy(dtype=object))
    keep = rows >= 0
    kinds = oc["event_type"].to_numpy(dtype=object)[keep]
    values = oc["value"].to_numpy(dtype=float)[keep]
    rows = rows[keep]
    n = len(unit_ids)
    out[:, PRE_CLICKS] = np.bincount(rows, weights=(kinds == "click").astype(float), minlength=n)
    out[:, PRE_PURCHASES] = np.bincount(rows, weights=(kinds == "purchase").astype(float), minlength=n) > 0
    reward = np.where(np.isin(kinds, list(reward_events)), values, 0.0)
    out[:, PRE_REWARD] = np.bincount(rows, weights=reward, minlength=n)
    return out


def _linearised_ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
    mean_den = den.mean()
    if mean_den <= 0:
        return float("nan"), np.zeros_like(num)
    ratio = num.sum() / den.sum()
    return float(ratio), (num - ratio * den) / mean_den


def cuped_estimates(
    arms: dict[str, dict[str, np.ndarray]], pre: dict[str, np.ndarray]
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """CUPED (estimate, variance of the estimate, θ) per arm and metric (``ctr``, ``conversion``, ``reward``).

    ``arms[v]`` holds the arm's per-unit ``exposures``, ``clicks``, ``purchased``, ``reward``; ``pre[v]``
    the same units' `pre_period_covariates` rows.
    """
    per_metric: dict[str, dict[str, tuple[float, np.ndarray, np.ndarray]]] = {
        "ctr": {}, "conversion": {}, "reward": {}
    }
    pre_all = np.vstack([pre[v] for v in arms]) if arms else np.zeros((0, 4))
    pooled_exposures = pre_all[:, PRE_EXPOSURES].mean() if len(pre_all) else 0.0
    pooled_ratio = pre_all[:, PRE_CLICKS].sum() / max(pre_all[:, PRE_EXPOSURES].sum(), 1e-12)
    for v, a in arms.items():
        x = pre[v]
        ratio, lin = _linearised_ratio(a["clicks"].astype(float), a["exposures"].astype(float))
        x_ctr = (x[:, PRE_CLICKS] - pooled_ratio * x[:, PRE_EXPOSURES]) / pooled_exposures if pooled_exposures else (
            np.zeros(len(x))
        )
        per_metric["ctr"][v] = (ratio, lin, x_ctr)
        purchased = a["purchased"].astype(float)
        per_metric["conversion"][v] = (float(purchased.mean()), purchased, x[:, PRE_PURCHASES])
        reward = a["reward"].astype(float)
        per_metric["reward"][v] = (float(reward.mean()), reward, x[:, PRE_REWARD])
    out: dict[str, dict[str, tuple[float, float, float]]] = {v: {} for v in arms}
    for metric, by_arm in per_metric.items():
        cov = var = 0.0
        for _, y, x in by_arm.values():
            if len(y) > 1:
                dy, dx = y - y.mean(), x - x.mean()
                cov += float(dx @ dy)
                var += float(dx @ dx)
        theta = cov / var if var > 0 else 0.0
        x_all = np.concatenate([x for _, _, x in by_arm.values()]).mean()
        for v, (estimate, y, x) in by_arm.items():
            n = len(y)
            adjusted = estimate - theta * (x.mean() - x_all)
            variance = float(np.var(y - theta * x, ddof=1) / n) if n > 1 else float("nan")
            out[v][metric] = (float(adjusted), variance, float(theta))
    return out


__all__ = ["cuped_estimates", "pre_period_covariates"]
