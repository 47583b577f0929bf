"""Per-variant metrics from the exposure/outcome log, their variances, and the SRM check.

The randomisation unit is the user (``unit_id``), so every variance is computed across units:

* CTR = clicks / exposures summed over units — a *ratio of means*, whose per-exposure binomial
  variance would be too small (exposures of one user are correlated). Its variance is the delta method:
  ``Var(X̄/Ȳ) ≈ (s_X² − 2R·s_XY + R²·s_Y²) / (n·Ȳ²)`` with ``R = X̄/Ȳ``.
* Conversion = units with ≥1 purchase / exposed units, variance ``p(1−p)/n``.
* Mean reward = mean over units of the summed ``value`` of the analysis' reward events, variance ``s²/n``.

An outcome counts for an experiment only if it happened at or after that unit's first exposure in it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys.experiments.exposure_log import LogFrames

METRICS = ("ctr", "conversion", "reward")
SRM_P_THRESHOLD = 0.001


def ratio_delta_variance(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """Ratio of means ``sum(x)/sum(y)`` and its delta-method variance, from per-unit x and y."""
    x = np.asarray(numerator, dtype=float)
    y = np.asarray(denominator, dtype=float)
    n = x.size
    if n == 0 or y.sum() == 0:
        return float("nan"), float("nan")
    mx, my = x.mean(), y.mean()
    ratio = mx / my
    if n < 2:
        return float(ratio), float("nan")
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = np.cov(x, y, ddof=1)[0, 1]
    variance = (vx - 2 * ratio * cxy + ratio**2 * vy) / (n * my**2)
    return float(ratio), float(max(variance, 0.0))


@dataclass(frozen=True)
class VariantMetrics:
    variant: str
    units: int
    exposures: int
    clicks: int
    ctr: float
    ctr_var: float
    purchasers: int
    conversion: float
    conversion_var: float
    reward_mean: float
    reward_var: float  # variance of the mean, not of a unit

    def estimate(self, metric: str) -> tuple[float, float]:
        """(point estimate, variance of the estimate) for ``ctr``, ``conversion`` or ``reward``."""
        if metric == "ctr":
            return self.ctr, self.ctr_var
        if metric == "conversion":
            return self.conversion, self.conversion_var
        if metric == "reward":
            return self.reward_mean, self.reward_var
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unit_table(
    frames: LogFrames,
    experiment: str,
    reward_events: tuple[str, ...] | list[str] = ("purchase",),
    until: float | None = None,
) -> tuple[pd.DataFrame, int]:
    """One row per exposed unit: variant, first exposure, exposures, clicks, purchased, reward.

    Returns the table and the number of units seen in more than one variant (kept in their first one;
    a non-zero count means assignment changed under them, e.g. a lane was shrunk).
    """
    ex = frames.exposures
    ex = ex[ex["experiment"] == experiment]
    if until is not None:
        ex = ex[ex["ts"] <= until]
    columns = ["unit_id", "variant", "first_ts", "exposures", "clicks", "purchased", "reward"]
    if ex.empty:
        return pd.DataFrame(columns=columns), 0
    ex = ex.sort_values("ts", kind="stable")
    units = ex.groupby("unit_id", sort=False).agg(
        variant=("variant", "first"),
        first_ts=("ts", "first"),
        exposures=("ts", "size"),
        n_variants=("variant", "nunique"),
    )
    conflicting = int((units["n_variants"] > 1).sum())
    oc = frames.outcomes
    oc = oc[oc["unit_id"].isin(units.index)]
    if until is not None:
        oc = oc[oc["ts"] <= until]
    oc = oc.join(units["first_ts"], on="unit_id")
    oc = oc[oc["ts"] >= oc["first_ts"]]
    per_unit = pd.DataFrame(
        {
            "clicks": (oc["event_type"] == "click").groupby(oc["unit_id"]).sum(),
            "purchased": (oc["event_type"] == "purchase").groupby(oc["unit_id"]).any(),
            "reward": oc["value"].where(oc["event_type"].isin(list(reward_events)), 0.0).groupby(oc["unit_id"]).sum(),
        }
    )
    table = units.drop(columns="n_variants").join(per_unit, how="left")
    table["clicks"] = table["clicks"].fillna(0).astype(int)
    table["purchased"] = table["purchased"].astype("boolean").fillna(False).astype(bool)
    table["reward"] = table["reward"].fillna(0.0).astype(float)
    return table.reset_index()[columns], conflicting


def variant_metrics(table: pd.DataFrame) -> dict[str, VariantMetrics]:
    """Aggregate a `unit_table` into `VariantMetrics` per variant."""
    out: dict[str, VariantMetrics] = {}
    for variant, group in table.groupby("variant", sort=True):
        n = len(group)
        clicks = group["clicks"].to_numpy(dtype=float)
        exposures = group["exposures"].to_numpy(dtype=float)
        ctr, ctr_var = ratio_delta_variance(clicks, exposures)
        purchasers = int(group["purchased"].sum())
        conversion = purchasers / n
        reward = group["reward"].to_numpy(dtype=float)
        out[str(variant)] = VariantMetrics(
            variant=str(variant),
            units=n,
            exposures=int(exposures.sum()),
            clicks=int(clicks.sum()),
            ctr=ctr,
            ctr_var=ctr_var,
            purchasers=purchasers,
            conversion=conversion,
            conversion_var=conversion * (1 - conversion) / n,
            reward_mean=float(reward.mean()),
            reward_var=float(reward.var(ddof=1) / n) if n > 1 else float("nan"),
        )
    return out


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch check: are exposed units split the way the config says?"""

    observed: dict[str, int]
    expected: dict[str, float]  # expected unit counts
    chi2: float
    p_value: float
    mismatch: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def srm_check(
    observed: dict[str, int], expected_shares: dict[str, float], threshold: float = SRM_P_THRESHOLD
) -> SrmResult:
    """Chi-square goodness of fit of observed unit counts against the configured shares.

    A tiny p-value (default < 0.001, the usual SRM threshold) means the split is broken (a bug in
    assignment, logging or targeting) and the experiment's metrics should not be trusted.
    """
    names = list(expected_shares)
    counts = np.array([observed.get(name, 0) for name in names], dtype=float)
    unexpected = sum(c for name, c in observed.items() if name not in expected_shares)
    total = counts.sum() + unexpected
    shares = np.array([expected_shares[name] for name in names], dtype=float)
    expected = shares / shares.sum() * total if shares.sum() > 0 else np.zeros_like(shares)
    expected_map = {name: float(e) for name, e in zip(names, expected, strict=True)}
    observed_map = {name: int(observed.get(name, 0)) for name in names}
    observed_map.update({k: int(v) for k, v in observed.items() if k not in expected_shares})
    if total == 0:
        return SrmResult(observed_map, expected_map, 0.0, 1.0, False)
    positive = expected > 0
    if unexpected > 0 or np.any(counts[~positive] > 0):
        return SrmResult(observed_map, expected_map, float("inf"), 0.0, True)
    if positive.sum() < 2:
        return SrmResult(observed_map, expected_map, 0.0, 1.0, False)
    chi2, p_value = stats.chisquare(counts[positive], expected[positive])
    return SrmResult(observed_map, expected_map, float(chi2), float(p_value), bool(p_value < threshold))
