"""Rendering of analyses: plain-text tables for the terminal, a PNG per experiment, one HTML page.

The PNG shows, per treatment, the estimated difference over time inside its always-valid confidence
sequence (shaded), the zero line and the equivalence margin: a person can see at a glance whether the
band has left zero (a winner), shrunk inside the margin (no difference), or is still wide (continue).
"""

from __future__ import annotations

import base64
import html
import math
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recsys.experiments.analysis import ExperimentAnalysis  # noqa: E402
from recsys.experiments.config import slugify  # noqa: E402
from recsys.experiments.metrics import SrmResult  # noqa: E402


def _fmt(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def _render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def metrics_rows(analysis: ExperimentAnalysis) -> list[list[str]]:
    control = analysis.experiment.control_variant
    rows = [["variant", "units", "exposures", "ctr", "ctr_se", "conversion", "conv_se", "reward", "reward_se"]]
    for variant in analysis.experiment.variants:
        m = analysis.metrics.get(variant.name)
        name = f"{variant.name} (control)" if variant.name == control else variant.name
        if m is None:
            rows.append([name, "0"] + ["-"] * 7)
            continue
        rows.append(
            [
                name,
                str(m.units),
                str(m.exposures),
                _fmt(m.ctr),
                _fmt(math.sqrt(m.ctr_var) if m.ctr_var == m.ctr_var else float("nan")),
                _fmt(m.conversion),
                _fmt(math.sqrt(m.conversion_var)),
                _fmt(m.reward_mean),
                _fmt(math.sqrt(m.reward_var) if m.reward_var == m.reward_var else float("nan")),
            ]
        )
    return rows


def decision_rows(analysis: ExperimentAnalysis) -> list[list[str]]:
    """Per treatment and method; the decision column says ``withheld (SRM)`` while the SRM gate is closed."""
    rows = [["treatment", "method", "diff", "lower", "upper", "p (always-valid)", "stat", "bound", "decision"]]
    withheld = analysis.decision_withheld is not None
    for comparison in analysis.comparisons:
        for method, d in comparison.decisions.items():
            rows.append(
                [
                    comparison.treatment,
                    method,
                    _fmt(d.estimate),
                    _fmt(d.lower),
                    _fmt(d.upper),
                    _fmt(d.p_value),
                    _fmt(d.statistic),
                    _fmt(d.threshold),
                    "withheld (SRM)" if withheld and d.action == "stop" else d.label,
                ]
            )
    return rows


def srm_line(srm: SrmResult) -> str:
    observed = ", ".join(f"{k}={v}" for k, v in srm.observed.items())
    verdict = "MISMATCH (do not trust metrics)" if srm.mismatch else "ok"
    return f"SRM: chi2={_fmt(srm.chi2)} p={_fmt(srm.p_value)} [{observed}] -> {verdict}"


def plan_line(analysis: ExperimentAnalysis) -> str:
    """The frozen plan: its id, τ and its source, the looks, α and its spending, and any replan."""
    a = analysis.experiment.analysis
    plan = analysis.plan
    tau = analysis.tau_plan
    tau_text = f"tau {_fmt(tau.tau)} ({tau.source}: {tau.detail})" if tau else "no tau (mSPRT not run)"
    looks = f"mSPRT looks every {a.look_every_units} units per arm"
    if a.max_units_per_variant is not None:
        looks += f"; group sequential at k/{a.looks} of {a.max_units_per_variant} units per arm, OBF spending"
    head = f"plan {plan.plan_id} (frozen {plan.created_at})" if plan else "plan (not frozen)"
    line = f"{head}: {tau_text}; {looks}; alpha {a.alpha:g}"
    if a.mde is not None:
        line += f"; MDE {a.mde:g} relative"
    if a.cuped:
        line += f"; CUPED on (covariate: each unit's {a.pre_period_days:g}-day pre-period value)"
    if plan is not None and plan.replanned_from is not None:
        line += f"\nREPLANNED from v{plan.replanned_from}: {plan.replan_reason}"
    if analysis.plan_drift:
        line += (
            f"\nWARNING: the config's analysis.{{{', '.join(analysis.plan_drift)}}} changed since the plan was "
            "frozen; this report uses the frozen values (--replan REASON to adopt the new ones)"
        )
    return line


def cuped_line(analysis: ExperimentAnalysis) -> str | None:
    """The primary metric per arm with CUPED next to the plain estimate (what the tests used)."""
    metric = analysis.experiment.analysis.primary_metric
    parts = []
    for variant, m in analysis.metrics.items():
        if metric not in m.adjusted:
            continue
        est, var, theta = m.adjusted[metric]
        plain, plain_var = m.estimate(metric)
        parts.append(f"{variant} {_fmt(est)} se {_fmt(math.sqrt(var))} (plain {_fmt(plain)} se "
                     f"{_fmt(math.sqrt(plain_var))}, theta {_fmt(theta, 3)})")
    return f"CUPED {metric}: " + "; ".join(parts) if parts else None


def fallback_line(analysis: ExperimentAnalysis) -> str:
    """The fallback/degraded rate per arm (a guardrail metric) and whether it differs from control's."""
    g = analysis.fallback
    if g is None:
        return "fallback/degraded: no exposures"
    rates = ", ".join(f"{v}={r:.2%}" for v, r in g.rates.items())
    tests = ", ".join(f"{v} vs control p={_fmt(p)}" for v, p in g.p_values.items())
    verdict = f"DIFFERS between arms (p < {g.threshold:g})" if g.flagged else "ok"
    line = f"fallback/degraded exposures per arm: {rates} [{tests}] -> {verdict}"
    reasons = "; ".join(f"{v}: " + ", ".join(f"{r} {n}" for r, n in c.items()) for v, c in g.reasons.items() if c)
    return f"{line}; reasons: {reasons}" if reasons else line


def text_report(analysis: ExperimentAnalysis) -> str:
    e = analysis.experiment
    head = (
        f"== {e.name} (layer {e.layer}; metric {e.analysis.primary_metric}; method {e.analysis.method}; "
        f"alpha {e.analysis.alpha})"
    )
    # the plan, the SRM verdict and the guardrail come before anything that looks like a decision
    parts = [head, plan_line(analysis), srm_line(analysis.srm), fallback_line(analysis)]
    parts.append(_render(metrics_rows(analysis)))
    if (cuped := cuped_line(analysis)) is not None:
        parts.append(cuped)
    if analysis.comparisons:
        parts.append(_render(decision_rows(analysis)))
        parts.extend(f"  {c.treatment}: {c.decision.reason}" for c in analysis.comparisons)
    if analysis.conflicting_units:
        parts.append(f"WARNING: {analysis.conflicting_units} units were exposed to more than one variant")
    parts.append(f"DECISION {e.name}: {analysis.overall_label}")
    return "\n".join(parts)


def _stop_index(comparison) -> int | None:
    """Index of the look at which the decision was first reached (for the plot's marker)."""
    d, p = comparison.decision, comparison.path
    if d.action != "stop" or p.ts.size == 0:
        return None
    if d.method == "group_sequential":
        return int(d.extra.get("look", p.ts.size)) - 1
    if d.winner is not None:
        hits = (p.p_value <= d.extra.get("alpha", 0.05)).nonzero()[0]
        return int(hits[0]) if hits.size else None
    return p.ts.size - 1


def plot_confidence_sequences(analysis: ExperimentAnalysis, path: Path) -> Path:
    """PNG of each treatment's difference vs control with its confidence sequence over time."""
    e = analysis.experiment
    n = max(1, len(analysis.comparisons))
    fig, axes = plt.subplots(n, 1, figsize=(8, 3.2 * n), squeeze=False)
    for ax, comparison in zip(axes[:, 0], analysis.comparisons or [None], strict=False):
        if comparison is None or comparison.path.ts.size == 0:
            ax.text(0.5, 0.5, "not enough data yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        p = comparison.path
        times = [datetime.fromtimestamp(t, tz=UTC) for t in p.ts]
        ax.fill_between(times, p.lower, p.upper, alpha=0.25, color="tab:blue", label="confidence sequence")
        ax.plot(times, p.estimate, color="tab:blue", marker="o", ms=3, label="estimate")
        ax.axhline(0.0, color="black", lw=0.8)
        stop_index = _stop_index(comparison)
        if stop_index is not None:
            ax.axvline(times[stop_index], color="tab:red", lw=1, ls=":", label="decision reached")
        margin = e.analysis.equivalence_margin
        if margin:
            for y in (-margin, margin):
                ax.axhline(y, color="tab:gray", lw=0.8, ls="--")
        ax.set_title(
            f"{e.name}: {comparison.treatment} - {e.control_variant} ({e.analysis.primary_metric}, "
            f"{comparison.decision.method}) -> {comparison.decision.label}",
            fontsize=9,
        )
        ax.set_ylabel(f"diff in {e.analysis.primary_metric}")
        ax.legend(fontsize=8, loc="upper right")
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(analyses: list[ExperimentAnalysis], out_dir: str | Path) -> tuple[Path, list[Path]]:
    """Write one PNG per experiment and ``report.html`` embedding every table and PNG (self-contained)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    sections = []
    for analysis in analyses:
        png = plot_confidence_sequences(analysis, out / f"{slugify(analysis.name)}.png")
        pngs.append(png)
        encoded = base64.b64encode(png.read_bytes()).decode()
        reasons = "".join(
            f"<li>{html.escape(c.treatment)}: {html.escape(c.decision.reason)}</li>" for c in analysis.comparisons
        )
        sections.append(
            f"<section><h2>{html.escape(analysis.name)} &mdash; {html.escape(analysis.overall_label)}</h2>"
            f"<div class='row'><div>{_html_table(metrics_rows(analysis))}"
            f"{_html_table(decision_rows(analysis)) if analysis.comparisons else ''}"
            f"<ul>{reasons}</ul><p>{html.escape(plan_line(analysis))}</p>"
            f"<p>{html.escape(srm_line(analysis.srm))}</p><p>{html.escape(fallback_line(analysis))}</p></div>"
            f"<img alt='confidence sequence for {html.escape(analysis.name)}' "
            f"src='data:image/png;base64,{encoded}'></div></section>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Experiment report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:0 0 1em}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:right}"
        ".row{display:flex;gap:2em;align-items:flex-start}img{max-width:55%}"
        "</style></head><body><h1>Experiment report</h1>"
        f"<p>generated {datetime.now(tz=UTC).isoformat(timespec='seconds')}</p>" + "".join(sections) + "</body></html>"
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return html_path, pngs
