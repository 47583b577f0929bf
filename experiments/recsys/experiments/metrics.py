"""Per-variant metrics from the exposure/outcome log, their variances, and the SRM check.

The randomisation unit is the user (``unit_id``), so every variance is computed across units:

* CTR = clicks / exposures summed over units — a *ratio of means*, whose per-exposure binomial
  variance would be too small (exposures of one user are correlated). Its variance is the delta method:
  ``Var(X̄/Ȳ) ≈ (s_X² − 2R·s_XY + R²·s_Y²) / (n·Ȳ²)`` with ``R = X̄/Ȳ``.
* Conversion = units with ≥1 purchase / exposed units, variance ``p(1−p)/n``.
* Mean reward = mean over units of the summed ``value`` of the analysis' reward events, variance ``s²/n``.

An outcome counts for an experiment only if it happened within the attribution window after one of that
unit's exposures in it (``analysis.attribution_window_s``, default one day; `attribution_mask`): a click a
week after a unit's only exposure says nothing about the arm. Without a window (``None``), any outcome at or
after the unit's first exposure counts.

Intention to treat: a unit is analysed in the arm it was **assigned** to. Serving logs an exposure whose
variant did not reach the answer as ``variant="fallback"`` with ``assigned_variant``; such exposures
count in the assigned arm (`assigned_arms`), and the share of fallback/degraded exposures per arm is a
guardrail metric of its own (`FallbackGuardrail`). Dropping them, or making them an arm, removes the
units an outage hit from one arm only, so the survivors of that arm look better than they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys.experiments.exposure_log import LogFrames

METRICS = ("ctr", "conversion", "reward")
SRM_P_THRESHOLD = 0.001
FALLBACK = "fallback"
FALLBACK_GUARDRAIL_P = 0.001  # a fallback rate that differs between arms this clearly is flagged


def assigned_arms(ex: pd.DataFrame) -> np.ndarray:
    """The arm each exposure's unit was assigned to (intention to treat), ``fallback`` records included."""
    variant = ex["variant"].to_numpy(dtype=object)
    if "assigned_variant" not in ex.columns:
        return variant
    assigned = ex["assigned_variant"].to_numpy(dtype=object)
    return np.where((variant == FALLBACK) & pd.notna(assigned), assigned, variant)


def _has_reasons(value: Any) -> bool:
    if value is None or isinstance(value, float | str):
        return bool(value) and isinstance(value, str)
    try:
        return len(value) > 0
    except TypeError:
        return False


def _has_reasons_each(values: np.ndarray) -> np.ndarray:
    """:func:`_has_reasons` of each value. Only values that are not None/NaN (a C-level check) go through Python:
    most exposures are served as assigned and log none, and the A/A simulations build these columns hundreds of
    times (3.6M Python calls per 120 simulated experiments before)."""
    out = np.zeros(len(values), bool)
    idx = np.flatnonzero(pd.notna(values))
    if len(idx):
        out[idx] = np.fromiter((_has_reasons(v) for v in values[idx]), bool, len(idx))
    return out


def degraded_flags(ex: pd.DataFrame) -> np.ndarray:
    """True where the answer was not the arm's intended one: logged as fallback, or degraded in any arm."""
    flag = ex["variant"].to_numpy(dtype=object) == FALLBACK
    if "fallback_reason" in ex.columns:
        flag |= pd.notna(ex["fallback_reason"].to_numpy(dtype=object))
    if "degraded" in ex.columns:
        flag |= _has_reasons_each(ex["degraded"].to_numpy(dtype=object))
    return flag


def attribution_mask(out_unit: np.ndarray, out_ts: np.ndarray, exp_unit: np.ndarray, exp_ts: np.ndarray,
                     window_s: float | None) -> np.ndarray:
    """True for each outcome with an exposure of the same unit at most ``window_s`` before it (or at its time).

    The latest exposure at or before the outcome decides (``merge_asof``); ``window_s`` None: every outcome.
    """
    n = len(out_ts)
    if window_s is None:
        return np.ones(n, bool)
    mask = np.zeros(n, bool)
    if n == 0 or len(exp_ts) == 0:
        return mask
    left = pd.DataFrame({"u": np.asarray(out_unit, dtype=object), "t": np.asarray(out_ts, dtype=float),
                         "i": np.arange(n)})
    left = left[np.isfinite(left["t"])].sort_values("t", kind="stable")
    right = pd.DataFrame({"u": np.asarray(exp_unit, dtype=object), "t": np.asarray(exp_ts, dtype=float)})
    right = right.assign(e=right["t"]).sort_values("t", kind="stable")
    joined = pd.merge_asof(left, right, on="t", by="u", direction="backward", allow_exact_matches=True)
    mask[joined["i"].to_numpy()] = (joined["t"] - joined["e"] <= window_s).to_numpy()  # NaN (no exposure): False
    return mask


NO_REASON = "fallback (no reason logged)"


def _reasons_of(variant: Any, fallback_reason: Any, degraded: Any) -> tuple[str, ...]:
    reasons: list[str] = []
    if isinstance(fallback_reason, str) and fallback_reason:
        reasons.append(fallback_reason)
    if _has_reasons(degraded):
        reasons.extend(str(r) for r in ([degraded] if isinstance(degraded, str) else degraded))
    if not reasons and variant == FALLBACK:
        reasons.append(NO_REASON)
    return tuple(dict.fromkeys(reasons))  # one count per reason per exposure, in logged order


def exposure_reasons(ex: pd.DataFrame) -> np.ndarray:
    """Per exposure, the tuple of its fallback/degraded reasons (empty where it was served as assigned).

    ``fallback_reason`` and every ``degraded`` reason, each once; a ``fallback`` record without either
    gets ``NO_REASON``. Non-empty exactly where `degraded_flags` is True.
    """
    n = len(ex)

    def col(name: str) -> np.ndarray:
        return ex[name].to_numpy(dtype=object) if name in ex.columns else np.full(n, None, dtype=object)

    variant, fallback_reason, degraded = ex["variant"].to_numpy(dtype=object), col("fallback_reason"), col("degraded")
    some = np.flatnonzero(degraded_flags(ex))  # only these have something to say; the rest keep the empty tuple
    out = np.empty(n, dtype=object)
    out.fill(())
    for i in some:
        out[i] = _reasons_of(variant[i], fallback_reason[i], degraded[i])
    return out


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
    dx, dy = x - mx, y - my
    vx, vy, cxy = (dx @ dx) / (n - 1), (dy @ dy) / (n - 1), (dx @ dy) / (n - 1)
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
    # CUPED (estimate, variance, theta) per metric, when the analysis asked for it (see cuped.py)
    adjusted: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def estimate(self, metric: str, cuped: bool = False) -> tuple[float, float]:
        """(point estimate, variance of the estimate) for ``ctr``, ``conversion`` or ``reward``.

        ``cuped``: the CUPED-adjusted pair when it was computed (else the plain one).
        """
        if cuped and metric in self.adjusted:
            estimate, variance, _ = self.adjusted[metric]
            return estimate, variance
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
    attribution_window_s: float | None = None,
) -> tuple[pd.DataFrame, int]:
    """One row per exposed unit: variant, first exposure, exposures, clicks, purchased, reward.

    Outcomes count from the unit's first exposure on, and with ``attribution_window_s`` only within that
    long after one of its exposures (`attribution_mask`).

    The variant is the assigned one (intention to treat: ``fallback`` exposures count in their
    ``assigned_variant``). Returns the table and the number of units seen in more than one assigned
    variant (kept in their first one; a non-zero count means assignment changed under them).
    """
    ex = frames.exposures
    ex = ex[ex["experiment"] == experiment]
    if until is not None:
        ex = ex[ex["ts"] <= until]
    columns = ["unit_id", "variant", "first_ts", "exposures", "clicks", "purchased", "reward"]
    if ex.empty:
        return pd.DataFrame(columns=columns), 0
    ex = ex.assign(variant=assigned_arms(ex)).sort_values("ts", kind="stable")
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
    oc = oc[attribution_mask(oc["unit_id"].to_numpy(dtype=object), oc["ts"].to_numpy(dtype=float),
                             ex["unit_id"].to_numpy(dtype=object), ex["ts"].to_numpy(dtype=float),
                             attribution_window_s)]
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


def metrics_from_arrays(
    variant: str, exposures: np.ndarray, clicks: np.ndarray, purchased: np.ndarray, reward: np.ndarray
) -> VariantMetrics:
    """`VariantMetrics` from per-unit arrays (one entry per exposed unit of the variant)."""
    exposures = np.asarray(exposures, dtype=float)
    clicks = np.asarray(clicks, dtype=float)
    reward = np.asarray(reward, dtype=float)
    n = len(exposures)
    ctr, ctr_var = ratio_delta_variance(clicks, exposures)
    purchasers = int(np.count_nonzero(purchased))
    conversion = purchasers / n
    return VariantMetrics(
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


def variant_metrics(table: pd.DataFrame) -> dict[str, VariantMetrics]:
    """Aggregate a `unit_table` into `VariantMetrics` per variant."""
    return {
        str(variant): metrics_from_arrays(
            str(variant),
            group["exposures"].to_numpy(dtype=float),
            group["clicks"].to_numpy(dtype=float),
            group["purchased"].to_numpy(dtype=bool),
            group["reward"].to_numpy(dtype=float),
        )
        for variant, group in table.groupby("variant", sort=True)
    }


class UnitEvents:
    """One experiment's log as arrays, so metrics at many look times cost a few ``bincount`` each.

    Same rules as `unit_table`: a unit belongs to its first assigned variant from its first exposure on, and
    an outcome counts if it happened at or after that first exposure, within ``attribution_window_s`` after
    one of the unit's exposures. ``metrics_at(cut)`` equals ``variant_metrics(unit_table(frames, experiment,
    reward_events, until=cut, attribution_window_s=...)[0])`` (a test checks it); re-grouping the DataFrame
    at every look made the A/A simulations through the report path too slow to run thousands of times.
    """

    def __init__(
        self,
        frames: LogFrames,
        experiment: str,
        reward_events: tuple[str, ...] | list[str],
        pre_window: tuple[float, float] | None = None,
        attribution_window_s: float | None = None,
    ) -> None:
        """``pre_window``: ``[lo, hi)`` epoch seconds whose traffic gives each unit's CUPED covariates;
        ``attribution_window_s``: how long after an exposure of its unit an outcome still counts (None: any)."""
        ex = frames.exposures
        mask = (ex["experiment"] == experiment).to_numpy()
        exp_ts = ex["ts"].to_numpy(dtype=float)[mask]
        order = np.argsort(exp_ts, kind="stable")
        self.exp_ts = exp_ts[order]
        codes, uniques = pd.factorize(ex["unit_id"].to_numpy(dtype=object)[mask][order], sort=False)
        variants = assigned_arms(ex)[mask][order]
        self.exp_degraded = degraded_flags(ex)[mask][order]
        self.exp_reasons = exposure_reasons(ex[mask])[order]
        self.unit_ids = np.asarray(uniques, dtype=object)
        n = len(uniques)
        self.exp_unit = codes.astype(np.int64)
        # codes are numbered by first appearance in time order, so the first index of each is the first exposure
        _, first_idx = np.unique(codes, return_index=True)
        self.first_ts = self.exp_ts[first_idx]
        self.unit_variant = variants[first_idx]
        self.exp_variant = variants
        variant_codes, _ = pd.factorize(variants)
        pairs = np.unique(codes.astype(np.int64) * (int(variant_codes.max(initial=0)) + 1) + variant_codes)
        n_variants = np.bincount(pairs // (int(variant_codes.max(initial=0)) + 1), minlength=n) if n else pairs
        self.conflicting = int((n_variants > 1).sum())
        oc = frames.outcomes
        unit = pd.Index(self.unit_ids).get_indexer(oc["unit_id"].to_numpy(dtype=object)).astype(np.int64)
        ts = oc["ts"].to_numpy(dtype=float)
        keep = unit >= 0
        if n:
            keep &= ts >= self.first_ts[np.clip(unit, 0, None)]
            keep[keep] = attribution_mask(unit[keep], ts[keep], self.exp_unit, self.exp_ts, attribution_window_s)
        by_time = np.argsort(ts[keep], kind="stable")  # so "outcomes until cut" is a prefix
        self.out_unit = unit[keep][by_time]
        self.out_ts = ts[keep][by_time]
        kinds = oc["event_type"].to_numpy(dtype=object)[keep][by_time]
        self.out_click = (kinds == "click").astype(float)
        self.out_purchase = (kinds == "purchase").astype(float)
        values = oc["value"].to_numpy(dtype=float)[keep][by_time]
        self.out_reward = np.where(np.isin(kinds, list(reward_events)), values, 0.0)
        self.variant_names = sorted({str(v) for v in self.unit_variant})
        self._unit_masks = {v: self.unit_variant == v for v in self.variant_names}
        self.pre: np.ndarray | None = None
        if pre_window is not None:
            from recsys.experiments.cuped import pre_period_covariates

            self.pre = pre_period_covariates(frames, self.unit_ids, pre_window, reward_events)

    def counts(self) -> dict[str, dict[str, int]]:
        """Exposed units (by first variant) and exposures per variant, as `analysis.exposure_counts` reports."""
        units = {v: int(m.sum()) for v, m in self._unit_masks.items()}
        names, exposures = (
            np.unique(self.exp_variant.astype(str), return_counts=True) if len(self.exp_variant) else ([], [])
        )
        per_variant = dict(zip([str(x) for x in names], [int(c) for c in exposures], strict=True))
        return {
            v: {"units": units.get(v, 0), "exposures": per_variant.get(v, 0)}
            for v in sorted(set(units) | set(per_variant))
        }

    @property
    def empty(self) -> bool:
        return len(self.unit_ids) == 0

    def fallback_guardrail(self, control: str, threshold: float = FALLBACK_GUARDRAIL_P) -> FallbackGuardrail:
        """Share of each arm's exposures that were fallback/degraded, and a test that it is the same as control's.

        Per unit ``d_i`` degraded of ``e_i`` exposures; the rate is a ratio of means, so its variance is the
        delta method across units, like CTR. Flagged when a treatment's rate differs from control's with
        two-sided p < ``threshold``.
        """
        n = len(self.unit_ids)
        exposures = np.bincount(self.exp_unit, minlength=n).astype(float)
        degraded = np.bincount(self.exp_unit, weights=self.exp_degraded.astype(float), minlength=n)
        stats_by_arm = {}
        for variant, mask in self._unit_masks.items():
            stats_by_arm[variant] = ratio_delta_variance(degraded[mask], exposures[mask])
        counts = {v: int(degraded[m].sum()) for v, m in self._unit_masks.items()}
        p_values: dict[str, float] = {}
        if control in stats_by_arm:
            rc, vc = stats_by_arm[control]
            for variant, (rt, vt) in stats_by_arm.items():
                if variant == control:
                    continue
                se = np.sqrt(vc + vt) if np.isfinite(vc + vt) else float("nan")
                if se > 0:
                    p_values[variant] = float(2 * stats.norm.sf(abs(rt - rc) / se))
                else:
                    p_values[variant] = 1.0 if rt == rc else 0.0
        flagged = any(p < threshold for p in p_values.values())
        rates = {v: float(r) for v, (r, _) in stats_by_arm.items()}
        return FallbackGuardrail(rates=rates, degraded_exposures=counts, p_values=p_values, flagged=flagged,
                                 threshold=threshold, reasons=self._reasons_by_arm())

    def _reasons_by_arm(self) -> dict[str, dict[str, int]]:
        """Exposures per fallback/degraded reason, per arm (the unit's assigned arm), most frequent first."""
        out: dict[str, dict[str, int]] = {v: {} for v in self.variant_names}
        arms = self.unit_variant[self.exp_unit] if len(self.exp_unit) else np.zeros(0, dtype=object)
        for arm, reasons in zip(arms, self.exp_reasons, strict=True):
            for reason in reasons:
                counts = out.setdefault(str(arm), {})
                counts[reason] = counts.get(reason, 0) + 1
        return {v: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))) for v, c in out.items()}

    def arm_first_ts(self, variant: str) -> np.ndarray:
        """Sorted first-exposure times of a variant's units (the k-th entry: when it had k+1 units)."""
        return np.sort(self.first_ts[self.unit_variant == variant])

    def metrics_at(self, cut: float = float("inf"), cuped: bool = False) -> dict[str, VariantMetrics]:
        """Metrics of the units exposed by ``cut``; with ``cuped`` (and a ``pre_window``) also CUPED-adjusted."""
        n = len(self.unit_ids)
        if n == 0:
            return {}
        present = self.first_ts <= cut
        exposures = np.bincount(self.exp_unit[: np.searchsorted(self.exp_ts, cut, side="right")], minlength=n)
        seen = np.searchsorted(self.out_ts, cut, side="right")
        units = self.out_unit[:seen]
        clicks = np.bincount(units, weights=self.out_click[:seen], minlength=n)
        purchases = np.bincount(units, weights=self.out_purchase[:seen], minlength=n)
        reward = np.bincount(units, weights=self.out_reward[:seen], minlength=n)
        out: dict[str, VariantMetrics] = {}
        masks = {v: present & self._unit_masks[v] for v in self.variant_names}
        masks = {v: m for v, m in masks.items() if m.any()}
        for variant, mask in masks.items():
            out[variant] = metrics_from_arrays(
                variant, exposures[mask], clicks[mask], purchases[mask] > 0, reward[mask]
            )
        if cuped and self.pre is not None and masks:
            from recsys.experiments.cuped import cuped_estimates

            arms = {
                v: {"exposures": exposures[m], "clicks": clicks[m], "purchased": purchases[m] > 0, "reward": reward[m]}
                for v, m in masks.items()
            }
            adjusted = cuped_estimates(arms, {v: self.pre[m] for v, m in masks.items()})
            out = {v: replace(metrics, adjusted=adjusted[v]) for v, metrics in out.items()}
        return out


@dataclass(frozen=True)
class FallbackGuardrail:
    """Fallback/degraded exposures per arm (a guardrail metric): an arm served worse than it was assigned."""

    rates: dict[str, float]  # share of the arm's exposures that were fallback or degraded
    degraded_exposures: dict[str, int]
    p_values: dict[str, float]  # treatment vs control, two-sided
    flagged: bool
    threshold: float
    # per arm: exposures per reason (fallback_reason and each degraded reason, once per exposure)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
