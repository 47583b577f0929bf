"""Seeded simulations: error rates of the sequential tests under peeking, and synthetic logs.

`simulate_error_rates` runs thousands of A/A (and A/B) experiments at once with numpy: per batch it
draws sufficient statistics (binomial counts, or normal batch sums and within-batch sums of squares)
instead of individual users, so 2,000 runs × 50 looks take well under a second. At every look it
applies (a) the mSPRT, (b) the naive fixed-horizon t-test, and (c) at ``gs_looks`` evenly spaced looks
the group-sequential test — exactly the "check the dashboard every batch" behaviour these tests are
meant to survive.

`write_synthetic_log` produces an exposure/outcome log through the real router and `ExposureLog`, for
examples, docs and the CLI tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import stats

from recsys.experiments.config import ExperimentsConfig
from recsys.experiments.exposure_log import ExposureLog
from recsys.experiments.router import ExperimentRouter
from recsys.experiments.sequential import lan_demets_boundaries, msprt_log_lr


@dataclass(frozen=True)
class ErrorRates:
    runs: int
    looks: int
    units_per_arm: int
    msprt_fpr: float
    naive_fpr: float
    group_sequential_fpr: float
    msprt_power: float
    naive_power: float
    group_sequential_power: float
    msprt_mean_stop_fraction: float  # mean share of the horizon used by mSPRT when it detects the effect

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _cumulative_arms(
    rng: np.random.Generator,
    runs: int,
    batches: int,
    batch_size: int,
    metric: Literal["binary", "continuous"],
    mean: float,
    sd: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (n, estimate, variance of the estimate) for one arm, shape (runs, batches)."""
    n = batch_size * np.arange(1, batches + 1, dtype=float)
    if metric == "binary":
        successes = np.cumsum(rng.binomial(batch_size, mean, size=(runs, batches)), axis=1)
        p = successes / n
        return n, p, p * (1 - p) / n
    sums = rng.normal(batch_size * mean, sd * np.sqrt(batch_size), size=(runs, batches))
    within = sd**2 * rng.chisquare(batch_size - 1, size=(runs, batches))  # Σ(x − batch mean)²
    batch_means = sums / batch_size
    total = np.cumsum(sums, axis=1)
    grand = total / n
    # total sum of squares about the grand mean = within + between (parallel-variance formula)
    ss = np.cumsum(within + batch_size * batch_means**2, axis=1) - n * grand**2
    var_unit = ss / (n - 1)
    return n, grand, var_unit / n


def simulate_error_rates(
    *,
    runs: int = 2000,
    batches: int = 50,
    batch_size: int = 200,
    metric: Literal["binary", "continuous"] = "binary",
    baseline: float = 0.10,
    effect: float = 0.02,
    sd: float = 1.0,
    tau: float | None = None,
    alpha: float = 0.05,
    gs_looks: int = 10,
    seed: int = 0,
) -> ErrorRates:
    """False-positive rate (A/A) and power (true difference ``effect``) under peeking after every batch.

    ``baseline`` is the control rate (binary) or mean (continuous); ``tau`` defaults to ``effect``.
    """
    if batches % gs_looks:
        raise ValueError("batches must be a multiple of gs_looks")
    rng = np.random.default_rng(seed)
    tau2 = (tau if tau is not None else effect) ** 2
    fractions = np.arange(1, gs_looks + 1) / gs_looks
    gs_bounds = lan_demets_boundaries(fractions, alpha)
    gs_index = np.arange(batches // gs_looks - 1, batches, batches // gs_looks)
    results: dict[str, dict[str, float]] = {}
    for label, lift in (("aa", 0.0), ("ab", effect)):
        n, est_c, var_c = _cumulative_arms(rng, runs, batches, batch_size, metric, baseline, sd)
        _, est_t, var_t = _cumulative_arms(rng, runs, batches, batch_size, metric, baseline + lift, sd)
        delta = est_t - est_c
        var = np.maximum(var_c + var_t, 1e-12)
        msprt_hit = msprt_log_lr(delta, var, tau2) >= np.log(1 / alpha)
        df = 2 * n - 2
        naive_hit = 2 * stats.t.sf(np.abs(delta) / np.sqrt(var), df) < alpha
        z_gs = np.abs(delta[:, gs_index]) / np.sqrt(var[:, gs_index])
        gs_hit = (z_gs >= gs_bounds).any(axis=1)
        first = np.where(msprt_hit.any(axis=1), msprt_hit.argmax(axis=1) + 1, batches)
        results[label] = {
            "msprt": float(msprt_hit.any(axis=1).mean()),
            "naive": float(naive_hit.any(axis=1).mean()),
            "gs": float(gs_hit.mean()),
            "stop": float((first[msprt_hit.any(axis=1)] / batches).mean()) if msprt_hit.any() else 1.0,
        }
    return ErrorRates(
        runs=runs,
        looks=batches,
        units_per_arm=batches * batch_size,
        msprt_fpr=results["aa"]["msprt"],
        naive_fpr=results["aa"]["naive"],
        group_sequential_fpr=results["aa"]["gs"],
        msprt_power=results["ab"]["msprt"],
        naive_power=results["ab"]["naive"],
        group_sequential_power=results["ab"]["gs"],
        msprt_mean_stop_fraction=results["ab"]["stop"],
    )


def write_synthetic_log(
    config: ExperimentsConfig,
    directory: str | Path,
    *,
    units: int = 4000,
    requests_per_unit: tuple[int, int] = (1, 4),
    click_rate: dict[str, float] | None = None,
    purchase_rate: dict[str, float] | None = None,
    start_ts: float | None = None,
    duration_s: float = 7 * 86_400.0,
    seed: int = 0,
) -> int:
    """Simulate traffic through the real router and log exposures/outcomes; returns exposures written.

    ``click_rate``/``purchase_rate`` map variant name -> per-exposure probability (default 0.10/0.02).
    Purchases carry a value (lognormal amount) so that "reward" has something continuous to average.
    Traffic starts one minute after the latest experiment start (or at ``start_ts``).
    """
    rng = np.random.default_rng(seed)
    router = ExperimentRouter(config)
    click_rate = click_rate or {}
    purchase_rate = purchase_rate or {}
    if start_ts is None:
        starts = [e.start.timestamp() for e in config.experiments if e.start is not None]
        start_ts = max(starts) + 60.0 if starts else 1_700_000_000.0
    written = 0
    with ExposureLog(directory, fsync="never") as log:
        for u in range(units):
            unit = f"user-{u}"
            attributes = {"segment": "new" if rng.random() < 0.3 else "returning"}
            arrival = start_ts + rng.random() * duration_s * 0.8
            for r in range(int(rng.integers(requests_per_unit[0], requests_per_unit[1] + 1))):
                ts = arrival + r * 600.0 + rng.random() * 60
                assignments = router.assign(unit, attributes, now=ts)
                items = [int(i) for i in rng.integers(0, 1000, size=5)]
                for a in assignments:
                    log.log_assignment(unit, a, request_id=f"{unit}-{r}", items=items, ts=ts)
                    written += 1
                # outcomes follow the first layer's variant (the one that picked the models)
                variant = assignments[0].variant if assignments else ""
                if rng.random() < click_rate.get(variant, 0.10):
                    log.log_outcome(unit, "click", 1.0, ts + 5, item_id=items[0])
                if rng.random() < purchase_rate.get(variant, 0.02):
                    log.log_outcome(unit, "purchase", float(rng.lognormal(3, 0.5)), ts + 30, item_id=items[0])
    return written
