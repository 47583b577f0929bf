"""Off-policy evaluation: what CTR would a *different* policy have had, from the exposures we logged.

Before spending A/B traffic on a candidate policy, estimate its value from the log of the current
(logging) policy, which records for every shown item the probability ``mu`` it had of being shown
(``propensities`` in the exposure log). Three standard estimators, each with a normal-approximation
confidence interval over independent decisions (requests):

* **IPS** (inverse propensity scoring): ``mean_j  w_j r_j`` with ``w = pi / mu``. Unbiased when
  ``mu > 0`` wherever ``pi > 0``; its variance grows with ``E_mu[w^2]``, i.e. with how far the target
  policy is from the logging one.
* **SNIPS** (self-normalised IPS): ``sum w r / sum w``. Slightly biased (O(1/n)), much lower
  variance when weights are large; CI by the delta method.
* **DR** (doubly robust): ``mean_j [ sum_a pi(a|x_j) q(x_j, a) + w_j (r_j - q(x_j, a_j)) ]`` with a
  reward model ``q``. Unbiased if either the propensities or ``q`` are right; lower variance than IPS
  when ``q`` is decent. ``q`` must not be fitted on the same decisions it corrects (cross-fit).

The array functions take one row per decision. For the exposure log (a slate of items per request)
:func:`decisions_from_log` uses the item-level model: item ``i`` is in the slate with probability
``mu_i`` (logged) under the logging policy and ``pi_i`` under the target, and the value is the
expected number of clicks per request, ``sum_i pi_i E[r_i]`` (reported with CTR per shown item =
value / ``sum_i pi_i``). The CLI's target policy is a table ``item_id -> pi_i`` (probability of
being shown per request); :func:`simulate_ope` is the check that the estimators are unbiased
within their CIs and how their variance grows with policy divergence.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """One estimator's value with a confidence interval, plus the weight diagnostics that explain it."""

    estimator: str
    value: float
    lo: float
    hi: float
    se: float
    n: int
    max_weight: float
    effective_n: float  # (sum w)^2 / sum w^2: how many logged decisions the estimate is really worth

    def to_dict(self) -> dict[str, float | str | int]:
        return asdict(self)


def _interval(values: np.ndarray, center: float, confidence: float) -> tuple[float, float, float]:
    n = len(values)
    se = float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return center - z * se, center + z * se, se


def _weights(target_prob: np.ndarray, logging_prob: np.ndarray) -> np.ndarray:
    """π/μ per decision; a decision whose logged propensity is not a positive number is named (no support)."""
    mu = np.asarray(logging_prob, np.float64)
    bad = np.flatnonzero(~(np.isfinite(mu) & (mu > 0)))
    if bad.size:
        first = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise ValueError(
            f"decision {first}{more}: logging propensity {mu[first]:g} - the logging policy had no support "
            "there, so no estimator can weigh it; log the true (unrounded) propensities of every decision"
        )
    return np.asarray(target_prob, np.float64) / mu


def _diagnostics(w: np.ndarray) -> tuple[float, float]:
    s2 = float((w**2).sum())
    return float(w.max(initial=0.0)), float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def ips(rewards, target_prob, logging_prob, confidence: float = 0.95) -> Estimate:
    """Inverse propensity scoring over decisions (see module docstring)."""
    w = _weights(target_prob, logging_prob)
    v = w * np.asarray(rewards, np.float64)
    value = float(v.mean())
    lo, hi, se = _interval(v, value, confidence)
    return Estimate("ips", value, lo, hi, se, len(v), *_diagnostics(w))


def snips(rewards, target_prob, logging_prob, confidence: float = 0.95) -> Estimate:
    """Self-normalised IPS; its CI uses the delta-method influence ``w (r - V) / mean(w)``."""
    w = _weights(target_prob, logging_prob)
    r = np.asarray(rewards, np.float64)
    if w.sum() <= 0:
        return Estimate("snips", float("nan"), float("nan"), float("nan"), float("nan"), len(r), 0.0, 0.0)
    value = float((w * r).sum() / w.sum())
    influence = w * (r - value) / w.mean()
    _, _, se = _interval(influence, 0.0, confidence)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return Estimate("snips", value, value - z * se, value + z * se, se, len(r), *_diagnostics(w))


def doubly_robust(rewards, target_prob, logging_prob, q_logged, dm_value, confidence: float = 0.95) -> Estimate:
    """Doubly robust: per decision ``dm_value + w (r - q_logged)``.

    ``q_logged``: the reward model at the logged action; ``dm_value``: ``sum_a pi(a|x) q(x, a)`` per
    decision (the direct-method value of the target).
    """
    w = _weights(target_prob, logging_prob)
    v = np.asarray(dm_value, np.float64) + w * (np.asarray(rewards, np.float64) - np.asarray(q_logged, np.float64))
    value = float(v.mean())
    lo, hi, se = _interval(v, value, confidence)
    return Estimate("dr", value, lo, hi, se, len(v), *_diagnostics(w))


# ---------------------------------------------------------------------- slate logs (per request)
@dataclass
class RequestDecisions:
    """The exposure log reduced to per-request sums the estimators need (one row per request)."""

    ips_terms: np.ndarray  # sum over shown items of (pi_i / mu_i) r_i
    weight_sums: np.ndarray  # sum over shown items of pi_i / mu_i   (SNIPS normaliser per request)
    dr_corrections: np.ndarray  # sum over shown items of (pi_i / mu_i) (r_i - q_i)
    dm_value: np.ndarray  # sum_i pi_i q_i per request, q cross-fitted (fitted on the other half of requests)
    slate_size: float  # sum_i pi_i: expected number of items the target shows per request
    n_requests: int
    skipped_without_propensities: int
    target_mass_logged: float  # share of the target's probability mass on items ever shown in the log
    skipped_cached: int = 0  # exposures that replayed a cached answer (``cached_from``): not decisions


def _read_policy(policy: str | Path) -> pd.DataFrame:
    p = Path(policy)
    if not p.exists():
        raise FileNotFoundError(f"policy file {p} does not exist")
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    elif p.suffix == ".json":
        df = pd.read_json(p)
    else:
        df = pd.read_csv(p)
    missing = {"item_id", "probability"} - set(df.columns)
    if missing:
        raise ValueError(f"policy file {p} is missing column(s) {sorted(missing)} (need item_id, probability)")
    prob = pd.to_numeric(df["probability"], errors="coerce")
    if prob.isna().any() or (prob < 0).any() or (prob > 1).any():
        raise ValueError(f"policy file {p}: probability must be a number in [0, 1] on every row")
    return pd.DataFrame({"item_id": df["item_id"].astype(str), "probability": prob.astype(float)})


def _credited_clicks(
    rows: pd.DataFrame, outcomes: pd.DataFrame, click_events: tuple[str, ...], window_s: float
) -> np.ndarray:
    """1 where a shown (unit, item) row got a click; each click credits one row only.

    Attribution: a click goes to the LATEST showing of that item to that unit at or before the click,
    if that showing is at most ``window_s`` old; earlier showings of the same item get nothing for it.
    """
    clicks = outcomes[outcomes["event_type"].isin(click_events)][["unit_id", "item_id", "ts"]].dropna()
    clicks = clicks.assign(item_id=clicks["item_id"].astype(str)).rename(columns={"ts": "click_ts"})
    joined = rows[["unit_id", "item_id", "ts"]].reset_index().merge(
        clicks.reset_index(names="click"), on=["unit_id", "item_id"]
    )
    joined = joined[(joined["click_ts"] >= joined["ts"]) & (joined["click_ts"] <= joined["ts"] + window_s)]
    latest = joined.sort_values(["ts", "index"], kind="stable").groupby("click")["index"].last()
    r = np.zeros(len(rows))
    r[latest.to_numpy(dtype=np.int64)] = 1.0
    return r


def decisions_from_log(exposures: pd.DataFrame, outcomes: pd.DataFrame, target: pd.DataFrame, *,
                       window_s: float = 3600.0, click_events: tuple[str, ...] = ("click", "purchase"),
                       prior_strength: float = 20.0) -> RequestDecisions:
    """Join exposures (with propensities) to clicks within ``window_s`` and reduce them per request.

    Each click credits one shown item: its latest showing to that unit at or before the click, within
    ``window_s`` (`_credited_clicks`). A shown item with propensity 0 (or none) is an error naming the
    request: IPS would divide by it.

    A response served from the result cache (``cached_from`` set) is skipped: it carries the original
    decision's propensities, but whether a replay happens at all depends on that decision's outcome (any
    event of the user, a click on the shown item included, invalidates the cache), so replays are a sample
    selected on the reward. A click after a replay credits the original decision if within ``window_s``.

    The reward model ``q_i`` is the per-item click rate shrunk towards the global rate (``prior_strength``
    pseudo-shows), cross-fitted: requests are split in two halves by a hash of the request id and each
    half is corrected with the rates of the other half.
    """
    has_p = exposures["propensities"].apply(lambda p: isinstance(p, list) and len(p) > 0) \
        if "propensities" in exposures else pd.Series(False, index=exposures.index)
    replay = exposures["cached_from"].map(lambda c: isinstance(c, str) and c != "") \
        if "cached_from" in exposures else pd.Series(False, index=exposures.index)
    ex = exposures[has_p & ~replay]
    skipped = int((~has_p & ~replay).sum())
    if ex.empty:
        raise ValueError("no exposure in the log carries propensities: serve with propensity logging first")
    # one decision per served response: the same response is logged once per layer (same unit, id and
    # time); a request id alone is not enough, since a client may reuse its X-Request-ID
    # (serving's exposure_id names a response; older logs fall back to request id + unit + time)
    server_id = ex["exposure_id"] if "exposure_id" in ex.columns else pd.Series(None, index=ex.index)
    key = [e if isinstance(e, str) else (r, u, t)
           for e, r, u, t in zip(server_id, ex["request_id"], ex["unit_id"], ex["ts"], strict=True)]
    ex = ex.assign(decision=pd.factorize(pd.Series(key, index=ex.index, dtype=object))[0])
    ex = ex.drop_duplicates(subset=["decision"])
    rows = ex[["unit_id", "request_id", "ts", "items", "propensities", "decision"]].explode(["items", "propensities"])
    rows = rows.rename(columns={"items": "item_id", "propensities": "mu"})
    rows["item_id"] = rows["item_id"].astype(str)
    rows["mu"] = rows["mu"].astype(float)
    bad = ~(np.isfinite(rows["mu"].to_numpy()) & (rows["mu"].to_numpy() > 0))
    if bad.any():
        first = rows[bad].iloc[0]
        raise ValueError(
            f"request {first['request_id']}: item {first['item_id']} has logging propensity {first['mu']:g} "
            f"({int(bad.sum())} shown item(s) in all): an item shown with propensity 0 means the log is wrong; "
            "serving must log the true (unrounded) propensity of every shown item"
        )
    rows = rows.reset_index(drop=True)
    rows["r"] = _credited_clicks(rows, outcomes, click_events, window_s)
    rows["fold"] = [zlib.crc32(str(r).encode()) & 1 for r in rows["request_id"]]

    pi = target.groupby("item_id")["probability"].sum()
    rows["pi"] = rows["item_id"].map(pi).fillna(0.0)
    rows["w"] = rows["pi"] / rows["mu"]
    # cross-fitted reward model per item: rates from the other fold, shrunk to the global rate
    q = np.zeros(len(rows))
    dm_fold = np.zeros(2)
    for fold in (0, 1):
        other = rows[rows["fold"] != fold]
        base = float(other["r"].mean()) if len(other) else float(rows["r"].mean())
        stats_ = other.groupby("item_id")["r"].agg(["sum", "count"])
        rate = (stats_["sum"] + prior_strength * base) / (stats_["count"] + prior_strength)
        mine = (rows["fold"] == fold).to_numpy()
        q[mine] = rows.loc[mine, "item_id"].map(rate).fillna(base).to_numpy()
        dm_fold[fold] = float((target["probability"] * target["item_id"].map(rate).fillna(base)).sum())
    rows["q"] = q
    logged_items = set(rows["item_id"])
    total = float(target["probability"].sum())
    mass_logged = float(target.loc[target["item_id"].isin(logged_items), "probability"].sum() / total) if total else 0.0

    rows["ips"] = rows["w"] * rows["r"]
    rows["corr"] = rows["w"] * (rows["r"] - rows["q"])
    per = rows.groupby("decision").agg(ips=("ips", "sum"), w=("w", "sum"), corr=("corr", "sum"),
                                         fold=("fold", "first"))
    return RequestDecisions(per["ips"].to_numpy(), per["w"].to_numpy(), per["corr"].to_numpy(),
                            dm_fold[per["fold"].to_numpy()], total, len(per), skipped, mass_logged,
                            int(replay.sum()))


def estimate_from_log(d: RequestDecisions, confidence: float = 0.95) -> list[Estimate]:
    """IPS, SNIPS, DR and DM of expected clicks per request under the target policy."""
    n = d.n_requests
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    out = []
    w_max, ess = _diagnostics(d.weight_sums)
    value = float(d.ips_terms.mean())
    lo, hi, se = _interval(d.ips_terms, value, confidence)
    out.append(Estimate("ips", value, lo, hi, se, n, w_max, ess))
    # SNIPS over requests: normalise by the mean per-request weight relative to the target slate size
    norm = d.weight_sums.mean() / d.slate_size if d.slate_size > 0 else 0.0
    if norm > 0:
        value = float(d.ips_terms.mean() / norm)
        influence = (d.ips_terms - value * d.weight_sums / d.slate_size) / norm
        _, _, se = _interval(influence, 0.0, confidence)
        out.append(Estimate("snips", value, value - z * se, value + z * se, se, n, w_max, ess))
    dr_terms = d.dm_value + d.dr_corrections
    value = float(dr_terms.mean())
    lo, hi, se = _interval(dr_terms, value, confidence)
    out.append(Estimate("dr", value, lo, hi, se, n, w_max, ess))
    dm = float(d.dm_value.mean())
    out.append(Estimate("dm", dm, dm, dm, 0.0, n, 0.0, float(n)))
    return out


# ---------------------------------------------------------------------- simulation with known truth
@dataclass(frozen=True)
class OPESimulationRow:
    divergence: float  # mixing weight lambda of the target towards a greedy policy
    kl: float  # mean KL(target || logging) over contexts
    true_value: float
    estimator: str
    mean_estimate: float
    bias: float
    empirical_sd: float
    mean_se: float
    coverage: float  # share of runs whose CI contains the true value
    mean_effective_n: float


def simulate_ope(*, runs: int = 300, decisions: int = 2000, n_actions: int = 10, n_contexts: int = 50,
                 dim: int = 5, logging_temperature: float = 1.0, divergences: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9),
                 confidence: float = 0.95, seed: int = 0) -> list[OPESimulationRow]:
    """Contextual-bandit simulation where every target policy's true CTR is computed exactly.

    Contexts come from a finite pool (so the true value is an exact sum); the click probability is
    ``sigmoid(0.5 x . beta_a - 2.5)``; logging = softmax of a noisy score; target_lambda = (1 - lambda) *
    logging + lambda * (greedy on the true CTR), so larger lambda = further from logging. DR's reward
    model is deliberately misspecified (per-action mean CTR, ignoring the context), fitted on an
    independent log. Returns one row per (divergence, estimator).
    """
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(n_contexts, dim))
    beta = rng.normal(size=(n_actions, dim))
    ctr = 1 / (1 + np.exp(-(0.5 * contexts @ beta.T - 2.5)))  # [C, A]
    noisy = contexts @ beta.T + rng.normal(scale=1.5, size=(n_contexts, n_actions))
    logits = noisy / logging_temperature
    mu = np.exp(logits - logits.max(1, keepdims=True))
    mu /= mu.sum(1, keepdims=True)
    greedy = np.eye(n_actions)[ctr.argmax(1)]
    # misspecified reward model: per-action CTR from an independent logged sample
    c_fit = rng.integers(0, n_contexts, 20_000)
    u = rng.random(len(c_fit))
    a_fit = (mu[c_fit].cumsum(1) < u[:, None]).sum(1).clip(max=n_actions - 1)
    r_fit = rng.random(len(c_fit)) < ctr[c_fit, a_fit]
    q_action = np.array([(r_fit[a_fit == a].sum() + 1) / ((a_fit == a).sum() + 2) for a in range(n_actions)])
    q = np.broadcast_to(q_action, ctr.shape)

    rows: list[OPESimulationRow] = []
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    for lam in divergences:
        pi = (1 - lam) * mu + lam * greedy
        true_value = float((pi * ctr).sum(1).mean())
        kl = float(np.mean(np.sum(np.where(pi > 0, pi * np.log(np.maximum(pi, 1e-300) / mu), 0.0), axis=1)))
        # all runs at once: [runs, decisions]
        c = rng.integers(0, n_contexts, (runs, decisions))
        u = rng.random((runs, decisions))
        a = (mu[c].cumsum(-1) < u[..., None]).sum(-1).clip(max=n_actions - 1)
        r = (rng.random((runs, decisions)) < ctr[c, a]).astype(np.float64)
        w = pi[c, a] / mu[c, a]
        dm = (pi[c] * q[c]).sum(-1)
        # each run goes through the CLI's own estimators (estimate_from_log), one decision per request
        estimates = [{e.estimator: e for e in estimate_from_log(RequestDecisions(
            ips_terms=w[k] * r[k], weight_sums=w[k], dr_corrections=w[k] * (r[k] - q[c[k], a[k]]), dm_value=dm[k],
            slate_size=1.0, n_requests=decisions, skipped_without_propensities=0, target_mass_logged=1.0),
            confidence)} for k in range(runs)]
        ess = np.array([e["ips"].effective_n for e in estimates])
        for name in ("ips", "snips", "dr"):
            est = np.array([e[name].value for e in estimates])
            se = np.array([e[name].se for e in estimates])
            cover = np.abs(est - true_value) <= z * se
            rows.append(OPESimulationRow(lam, kl, true_value, name, float(est.mean()), float(est.mean() - true_value),
                                         float(est.std(ddof=1)), float(se.mean()), float(cover.mean()),
                                         float(ess.mean())))
    return rows


def simulation_table(rows: list[OPESimulationRow]) -> str:
    """Markdown table of :func:`simulate_ope` rows (the one in docs/experiments.md)."""
    lines = ["| lambda | KL(pi‖mu) | true CTR | estimator | mean estimate | bias | sd over runs | mean CI half-width "
             "| CI coverage | effective n |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    z = float(stats.norm.ppf(0.975))
    for r in rows:
        lines.append(f"| {r.divergence:.1f} | {r.kl:.3f} | {r.true_value:.4f} | {r.estimator} | {r.mean_estimate:.4f} "
                     f"| {r.bias:+.4f} | {r.empirical_sd:.4f} | {z * r.mean_se:.4f} | {r.coverage:.3f} "
                     f"| {r.mean_effective_n:.0f} |")
    return "\n".join(lines)


def write_policy_log(directory: str | Path, *, requests: int = 5000, n_items: int = 40, slate: int = 5,
                     temperature: float = 1.0, seed: int = 0, experiment: str = "ope-demo",
                     variant: str = "logging") -> tuple[np.ndarray, np.ndarray]:
    """A synthetic exposure log whose logging policy and item CTRs are known (for the CLI test and docs).

    Per request ``slate`` items are drawn without replacement by the Gumbel top-k trick from
    softmax(score / temperature); the logged propensity of each shown item is its exact inclusion
    probability, estimated once by Monte Carlo over 20,000 draws. Returns (item CTRs, inclusion
    probabilities), indexed by item id 0..n_items-1.
    """
    from recsys.experiments.exposure_log import ExposureLog

    rng = np.random.default_rng(seed)
    score = rng.normal(size=n_items)
    item_ctr = 1 / (1 + np.exp(-(rng.normal(size=n_items) - 2.0)))
    logits = score / temperature
    g = logits + rng.gumbel(size=(20_000, n_items))
    top = np.argpartition(-g, slate - 1, axis=1)[:, :slate]
    inclusion = np.bincount(top.ravel(), minlength=n_items) / 20_000
    inclusion = np.maximum(inclusion, 1 / 20_000)
    with ExposureLog(directory, fsync="never") as log:
        for j in range(requests):
            ts = 1_700_000_000.0 + j
            shown = np.argpartition(-(logits + rng.gumbel(size=n_items)), slate - 1)[:slate]
            unit = f"user-{j}"
            log.log_exposure(unit, experiment, variant, f"req-{j}", ts, [int(i) for i in shown],
                             propensities=[float(inclusion[i]) for i in shown])
            for i in shown:
                if rng.random() < item_ctr[i]:
                    log.log_outcome(unit, "click", 1.0, ts + 1, item_id=int(i))
    return item_ctr, inclusion


if __name__ == "__main__":  # python -m recsys.experiments.ope: the simulation table in docs/experiments.md
    import argparse

    parser = argparse.ArgumentParser(description="OPE simulation with known true values")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(simulation_table(simulate_ope(runs=args.runs, decisions=args.decisions, seed=args.seed)))
