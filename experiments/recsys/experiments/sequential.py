"""Sequential tests that stay valid when someone looks at the dashboard every hour.

Both tests work on any asymptotically normal estimate of the treatment − control difference
``Δ̂`` with variance ``V`` (``V = Var(est_T) + Var(est_C)``), so CTR (delta method), conversion and
mean reward all go through the same code.

mSPRT (Johari, Pekelis & Walsh, "Always valid inference", 2017/2022), normal mixture over the
effect ``θ ~ N(0, τ²)``::

    Λ_n = sqrt(V / (V + τ²)) · exp( τ² Δ̂² / (2 V (V + τ²)) )

``Λ_n`` is a likelihood ratio martingale under H0, so by Ville's inequality ``P(sup_n Λ_n ≥ 1/α) ≤ α``:
the always-valid p-value ``p_n = min(p_{n−1}, 1/Λ_n)`` may be checked after every batch. Inverting the
test gives the confidence sequence ``Δ̂ ± sqrt( V(V+τ²)/τ² · (2·log(1/α) + log((V+τ²)/V)) )``
(running intersection kept), which covers the true difference at all times simultaneously.

Group sequential (Lan & DeMets 1983): an O'Brien–Fleming-type alpha-spending function, per side
``2 − 2Φ(z_{1−α/4} / √t)`` (the gsDesign/rpact convention), spends almost nothing early. At each look with
information fraction ``t_k = n_k / n_max`` the two-sided boundary ``c_k`` solves
``P_H0(no earlier crossing, |Z_k| ≥ c_k) = α(t_k) − α(t_{k−1})``; that probability is computed by
numerical integration of the Brownian-motion density over the continuation region (Armitage, McPherson
& Rowe 1969), root-found with scipy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

MAX_Z = 8.0


# ---------------------------------------------------------------------- mSPRT maths (vectorised)


def msprt_log_lr(delta: Any, variance: Any, tau2: Any, theta0: float = 0.0) -> np.ndarray:
    """log Λ of the normal-mixture SPRT for H0: difference == theta0 (numpy-broadcasting)."""
    v = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    tau2 = np.asarray(tau2, dtype=float)
    d = np.asarray(delta, dtype=float) - theta0
    return 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2.0 * v * (v + tau2))


def msprt_p_value(delta: Any, variance: Any, tau2: Any) -> np.ndarray:
    """Per-look ``min(1, 1/Λ_n)``; the always-valid p-value is its running minimum."""
    return np.minimum(1.0, np.exp(-msprt_log_lr(delta, variance, tau2)))


def confidence_sequence_halfwidth(variance: Any, tau2: Any, alpha: float) -> np.ndarray:
    """Half-width of the (1 − alpha) mSPRT confidence sequence around Δ̂ at one look."""
    v = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    tau2 = np.asarray(tau2, dtype=float)
    return np.sqrt(v * (v + tau2) / tau2 * (2.0 * np.log(1.0 / alpha) + np.log((v + tau2) / v)))


# ---------------------------------------------------------------------- group-sequential maths


def obf_spending(t: Any, alpha: float) -> np.ndarray:
    """Total two-sided alpha spent by information fraction t under Lan–DeMets O'Brien–Fleming spending.

    As in gsDesign/rpact/ldbounds, each side spends ``α/2`` with ``2 − 2Φ(z_{1−α/4} / √t)``, so the
    boundaries match the published tables (K = 5, α = 0.05: 4.877, 3.357, 2.680, 2.290, 2.031).
    """
    t = np.clip(np.asarray(t, dtype=float), 1e-12, 1.0)
    return 2.0 * (2.0 - 2.0 * stats.norm.cdf(stats.norm.isf(alpha / 4.0) / np.sqrt(t)))


def _simpson_weights(m: int, h: float) -> np.ndarray:
    w = np.ones(m)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return w * h / 3.0


def _exit_excess(z: float, *, xs: np.ndarray, mass: np.ndarray, sd: float, root_t: float, target: float) -> float:
    """P(continue so far, then |Z_k| >= z) − target, with the sub-density ``mass`` on grid ``xs`` (B scale)."""
    hk = z * root_t
    return float(np.sum(mass * (stats.norm.cdf((-hk - xs) / sd) + stats.norm.sf((hk - xs) / sd)))) - target


def lan_demets_boundaries(fractions: Sequence[float], alpha: float = 0.05, grid: int = 401) -> np.ndarray:
    """Two-sided z boundaries c_k (cached: a plan's looks, and so its boundaries, do not change)."""
    key = tuple(round(float(f), 12) for f in np.atleast_1d(np.asarray(fractions, dtype=float)))
    return np.array(_lan_demets_cached(key, float(alpha), int(grid)))


@functools.lru_cache(maxsize=256)
def _lan_demets_cached(fractions: tuple[float, ...], alpha: float, grid: int) -> tuple[float, ...]:
    return tuple(float(b) for b in _lan_demets_boundaries(fractions, alpha, grid))


def _lan_demets_boundaries(fractions: Sequence[float], alpha: float = 0.05, grid: int = 401) -> np.ndarray:
    """Two-sided z boundaries c_k for looks at information fractions ``fractions`` (increasing, ≤ 1).

    Boundaries for the first k looks depend only on the first k fractions, so unplanned extra looks
    are fine. Returns ``MAX_Z`` (8) where the spending increment is negligible.
    """
    t = np.asarray(fractions, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(t <= 0) or np.any(t > 1 + 1e-12) or np.any(np.diff(t) <= 0):
        raise ValueError("information fractions must be strictly increasing values in (0, 1]")
    m = grid if grid % 2 == 1 else grid + 1
    spent = obf_spending(t, alpha)
    increments = np.diff(np.concatenate([[0.0], spent]))
    bounds = np.empty(t.size)
    # look 1: B_1 = Z_1 * sqrt(t_1) ~ N(0, t_1)
    bounds[0] = stats.norm.isf(increments[0] / 2.0) if increments[0] > 1e-15 else MAX_Z
    bounds[0] = min(bounds[0], MAX_Z)
    h = bounds[0] * np.sqrt(t[0])
    xs = np.linspace(-h, h, m)
    density = stats.norm.pdf(xs, scale=np.sqrt(t[0]))
    for k in range(1, t.size):
        sd = np.sqrt(t[k] - t[k - 1])
        mass = density * _simpson_weights(m, xs[1] - xs[0])
        root_t = np.sqrt(t[k])

        target = increments[k]
        excess = functools.partial(_exit_excess, xs=xs, mass=mass, sd=sd, root_t=root_t, target=target)
        if target <= 1e-15 or excess(MAX_Z) >= 0:
            bounds[k] = MAX_Z
        else:
            bounds[k] = optimize.brentq(excess, 1e-6, MAX_Z, xtol=1e-10)
        hk = bounds[k] * root_t
        new_xs = np.linspace(-hk, hk, m)
        kernel = stats.norm.pdf((new_xs[:, None] - xs[None, :]) / sd) / sd
        density = kernel @ mass
        xs = new_xs
    return bounds


# ---------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class ArmSummary:
    """A variant's estimate of the metric at one look: units, point estimate, variance of the estimate."""

    n: int
    estimate: float
    variance: float


@dataclass(frozen=True)
class Look:
    ts: float
    control: ArmSummary
    treatment: ArmSummary


@dataclass(frozen=True)
class Decision:
    """What to do with a treatment-vs-control comparison, and the numbers behind it.

    ``label`` is ``"continue"``, ``"stop: <variant> wins"`` or ``"stop: no difference"``.
    ``lower``/``upper`` bound the difference (treatment − control): the always-valid confidence sequence
    for mSPRT, the repeated confidence interval for the group-sequential test.
    """

    action: Literal["continue", "stop"]
    winner: str | None
    method: str
    control: str
    treatment: str
    estimate: float
    lower: float
    upper: float
    p_value: float | None
    statistic: float
    threshold: float
    n_control: int
    n_treatment: int
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.action == "continue":
            return "continue"
        return f"stop: {self.winner} wins" if self.winner else "stop: no difference"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label
        return data


@dataclass(frozen=True)
class SequentialPath:
    """The test evaluated at every look: what the report plots, plus the final decision."""

    ts: np.ndarray
    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    p_value: np.ndarray  # always-valid (running min) for mSPRT; NaN for group sequential
    decision: Decision


def _winner(estimate: float, control: str, treatment: str, higher_is_better: bool) -> str:
    better = estimate > 0 if higher_is_better else estimate < 0
    return treatment if better else control


def undecided_path(method: str, control: str, treatment: str, reason: str) -> SequentialPath:
    """A "continue" path with no looks (not enough data yet, or no plan to test against)."""
    nan = float("nan")
    decision = Decision("continue", None, method, control, treatment, nan, nan, nan, None, nan, nan, 0, 0, reason)
    empty = np.array([], dtype=float)
    return SequentialPath(empty, empty, empty, empty, empty, decision)


def _usable(looks: Sequence[Look]) -> list[Look]:
    return [
        look
        for look in looks
        if look.control.n >= 2
        and look.treatment.n >= 2
        and np.isfinite([look.control.estimate, look.treatment.estimate]).all()
        and np.isfinite([look.control.variance, look.treatment.variance]).all()
        and look.control.variance + look.treatment.variance > 0
    ]


@dataclass(frozen=True)
class MsprtTest:
    """Mixture SPRT on the difference in means with always-valid p-values and confidence sequences.

    ``tau`` is the mixture sd on the metric's absolute scale (roughly the effect size you care about).
    It must be fixed before the data are seen: a τ recomputed from the running estimates makes
    ``Λ_n`` data-dependent, it is then no longer a martingale under H0 and Ville's bound no longer
    holds. `recsys.experiments.plan.plan_tau` resolves it once per experiment (config, baseline or
    pre-period data) and the report prints where it came from.
    """

    tau: float
    alpha: float = 0.05
    equivalence_margin: float | None = None
    max_units_per_variant: int | None = None
    higher_is_better: bool = True
    tau_source: str = "given"

    def __post_init__(self) -> None:
        if not (self.tau > 0 and np.isfinite(self.tau)):
            raise ValueError(f"tau must be a positive finite number, got {self.tau!r}")

    def run(self, looks: Sequence[Look], control: str, treatment: str) -> SequentialPath:
        looks = _usable(looks)
        if not looks:
            return undecided_path("msprt", control, treatment, "not enough data (need >= 2 units per variant)")
        ts = np.array([look.ts for look in looks])
        est_c = np.array([look.control.estimate for look in looks])
        est_t = np.array([look.treatment.estimate for look in looks])
        var = np.array([look.control.variance + look.treatment.variance for look in looks])
        delta = est_t - est_c
        tau2 = np.full_like(var, self.tau**2)
        p_path = np.minimum.accumulate(msprt_p_value(delta, var, tau2))
        half = confidence_sequence_halfwidth(var, tau2, self.alpha)
        lower = np.maximum.accumulate(delta - half)
        upper = np.minimum.accumulate(delta + half)
        last = looks[-1]
        est, lo, hi, p = float(delta[-1]), float(lower[-1]), float(upper[-1]), float(p_path[-1])
        log_lr = float(msprt_log_lr(delta[-1], var[-1], tau2[-1]))
        common = dict(
            method="msprt",
            control=control,
            treatment=treatment,
            estimate=est,
            lower=lo,
            upper=hi,
            p_value=p,
            statistic=log_lr,
            threshold=float(np.log(1 / self.alpha)),
            n_control=last.control.n,
            n_treatment=last.treatment.n,
            extra={"tau": float(self.tau), "tau_source": self.tau_source, "alpha": self.alpha, "looks": len(looks)},
        )
        if p <= self.alpha:
            winner = _winner(est, control, treatment, self.higher_is_better)
            reason = f"always-valid p = {p:.4g} <= alpha = {self.alpha}; CS [{lo:.4g}, {hi:.4g}] excludes 0"
            decision = Decision(action="stop", winner=winner, reason=reason, **common)
        elif self.equivalence_margin is not None and -self.equivalence_margin <= lo and hi <= self.equivalence_margin:
            reason = f"CS [{lo:.4g}, {hi:.4g}] lies within the equivalence margin +-{self.equivalence_margin:g}"
            decision = Decision(action="stop", winner=None, reason=reason, **common)
        elif self.max_units_per_variant is not None and min(last.control.n, last.treatment.n) >= (
            self.max_units_per_variant
        ):
            reason = f"reached max sample size {self.max_units_per_variant} per variant with p = {p:.4g}"
            decision = Decision(action="stop", winner=None, reason=reason, **common)
        else:
            reason = f"always-valid p = {p:.4g} > alpha = {self.alpha}; keep collecting"
            decision = Decision(action="continue", winner=None, reason=reason, **common)
        return SequentialPath(ts, delta, lower, upper, p_path, decision)


@dataclass(frozen=True)
class GroupSequentialTest:
    """Two-sided group-sequential z-test with Lan–DeMets O'Brien–Fleming-type alpha spending.

    The information fraction of a look is ``min(n_control, n_treatment) / max_units_per_variant``;
    looks that do not add information are skipped. At ``t = 1`` the test stops either way.
    """

    max_units_per_variant: int
    alpha: float = 0.05
    higher_is_better: bool = True

    def run(self, looks: Sequence[Look], control: str, treatment: str) -> SequentialPath:
        looks = _usable(looks)
        kept: list[Look] = []
        fractions: list[float] = []
        for look in looks:
            frac = min(1.0, min(look.control.n, look.treatment.n) / self.max_units_per_variant)
            if not fractions or frac > fractions[-1] + 1e-12:
                kept.append(look)
                fractions.append(frac)
        if not kept:
            return undecided_path("group_sequential", control, treatment, "not enough data")
        bounds = lan_demets_boundaries(fractions, self.alpha)
        ts = np.array([look.ts for look in kept])
        delta = np.array([look.treatment.estimate - look.control.estimate for look in kept])
        se = np.sqrt([look.control.variance + look.treatment.variance for look in kept])
        z = delta / se
        lower, upper = delta - bounds * se, delta + bounds * se
        crossed = np.flatnonzero(np.abs(z) >= bounds)
        k = int(crossed[0]) if crossed.size else len(kept) - 1
        look = kept[k]
        common = dict(
            method="group_sequential",
            control=control,
            treatment=treatment,
            estimate=float(delta[k]),
            lower=float(lower[k]),
            upper=float(upper[k]),
            p_value=None,
            statistic=float(z[k]),
            threshold=float(bounds[k]),
            n_control=look.control.n,
            n_treatment=look.treatment.n,
            extra={"information_fraction": fractions[k], "look": k + 1, "alpha": self.alpha},
        )
        if crossed.size:
            winner = _winner(float(delta[k]), control, treatment, self.higher_is_better)
            reason = f"|z| = {abs(z[k]):.3f} >= boundary {bounds[k]:.3f} at look {k + 1} (t = {fractions[k]:.2f})"
            decision = Decision(action="stop", winner=winner, reason=reason, **common)
        elif fractions[k] >= 1.0 - 1e-12:
            reason = f"final look (t = 1): |z| = {abs(z[k]):.3f} < boundary {bounds[k]:.3f}"
            decision = Decision(action="stop", winner=None, reason=reason, **common)
        else:
            reason = f"|z| = {abs(z[k]):.3f} < boundary {bounds[k]:.3f} at t = {fractions[k]:.2f}; keep collecting"
            decision = Decision(action="continue", winner=None, reason=reason, **common)
        return SequentialPath(ts, delta, lower, upper, np.full(len(kept), np.nan), decision)
