"""Data of the experiments pages and their downloads: straight from ``experiment_report`` (the CLI report's).

Per experiment: layer, arms (weights, lanes, model versions), traffic share and status; the frozen plan's
id (read from the plans folder, never written: without one the page says so and analyses with an in-memory
plan); the SRM verdict on assignments; per assigned arm (intention to treat) units, exposures and the
fallback/degraded guardrail; the decision, or "withheld (SRM)" with why; per metric and treatment the
sequential interval at every look. Every number comes from the report object's ``to_dict()``; the console
computes none of them. The primary metric is judged by the plan; the others are marked secondary.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

from recsys.console import sources
from recsys.console.config import ConsoleConfig
from recsys.console.sources import NotAvailable
from recsys.console.svg import interval_plot

NO_PLAN = "no frozen plan yet (run `recsys experiments report`)"


def decision_text(report: dict[str, Any]) -> str:
    """The decision, or "withheld (SRM)" when the report's SRM gate withholds it (the why is shown beside it)."""
    return "withheld (SRM)" if report["decision_withheld"] else report["decision"]


def _num(v: Any) -> float | None:
    """JSON-safe float (NaN/inf become None)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class ExperimentsPage:
    """Builds (and briefly caches) every experiment's analysis; thread-safe."""

    def __init__(self, cfg: ConsoleConfig):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._cached: tuple[float, Any] | None = None

    # ------------------------------------------------------------------ loading
    def _load(self):
        config = sources.load_experiments(self.cfg.experiments_config)
        if isinstance(config, NotAvailable):
            return config, None
        frames = sources.read_exposure_log(self.cfg.exposure_log_dir)
        return config, frames

    def _plan(self, name: str):
        return sources.read_plan(sources.plans_root(self.cfg.plans_dir, self.cfg.experiments_config), name)

    def _report(self, e, frames):
        """(report, plan facts) of one experiment; an unreadable plan file is shown, not guessed around."""
        plan = self._plan(e.name)
        if isinstance(plan, NotAvailable):
            return None, {"frozen": False, "plan_id": None, "text": str(plan)}
        r = sources.report(e, frames, plan)
        frozen = plan is not None
        return r, {"frozen": frozen, "plan_id": plan.plan_id if frozen else None,
                   "text": sources.plan_text(r, frozen) if frozen else f"{NO_PLAN}; analysed with "
                   + sources.plan_text(r, frozen), "drift": list(r.plan_drift)}

    def snapshot(self):
        """(config or NotAvailable, frames or NotAvailable/None), recomputed at most every ``cache_s``."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.cfg.cache_s:
                self._cached = (now, self._load())
            return self._cached[1]

    # ------------------------------------------------------------------ summary
    def summaries(self) -> list[dict[str, Any]] | NotAvailable:
        config, frames = self.snapshot()
        if isinstance(config, NotAvailable):
            return config
        now = datetime.now(tz=UTC)
        rows = []
        for layer in config.layer_names():
            for e, share in zip(config.experiments_in(layer), config.layer_shares(layer), strict=True):
                row = {"name": e.name, "layer": layer, "share_percent": share,
                       "status": sources.experiment_status(e, now),
                       "arms": [{"name": v.name, "weight": v.weight, "control": v.name == e.control_variant}
                                for v in e.variants],
                       "metric": e.analysis.primary_metric, "method": e.analysis.method,
                       "decision": None, "srm": None, "units": None, "plan_id": None}
                if not isinstance(frames, NotAvailable) and frames is not None:
                    r, plan = self._report(e, frames)
                    row["plan_id"] = plan["plan_id"]
                    if r is None:
                        row["decision"] = plan["text"]
                    else:
                        d = r.to_dict()
                        row["decision"] = decision_text(d)
                        row["srm"] = "mismatch" if d["srm"]["mismatch"] else "ok"
                        row["units"] = int(sum(m["units"] for m in d["metrics"].values()))
                rows.append(row)
        return rows

    # ------------------------------------------------------------------- detail
    def detail(self, name: str) -> dict[str, Any] | NotAvailable | None:
        """Everything about one experiment; None when there is no such experiment."""
        config, frames = self.snapshot()
        if isinstance(config, NotAvailable):
            return config
        try:
            e = config.experiment(name)
        except KeyError:
            return None
        share = dict(zip([x.name for x in config.experiments_in(e.layer)], config.layer_shares(e.layer),
                         strict=True))[e.name]
        out: dict[str, Any] = {
            "name": e.name, "description": e.description, "layer": e.layer, "share_percent": share,
            "status": sources.experiment_status(e, datetime.now(tz=UTC)),
            "start": e.start.isoformat() if e.start else None, "stop": e.stop.isoformat() if e.stop else None,
            "control": e.control_variant, "primary_metric": e.analysis.primary_metric, "method": e.analysis.method,
            "alpha": e.analysis.alpha, "equivalence_margin": e.analysis.equivalence_margin,
            "arms": [], "metrics": [], "log": None,
        }
        if isinstance(frames, NotAvailable):
            out["log"] = str(frames)
            frames = None
        r, plan = self._report(e, frames) if frames is not None else (None, None)
        out["plan"] = plan
        d = r.to_dict() if r is not None else None
        arms = (d or {}).get("metrics", {})
        fallback = (d or {}).get("fallback") or {}
        for v, lane in zip(e.variants, e.lanes(), strict=True):
            m = arms.get(v.name, {})
            out["arms"].append({"name": v.name, "control": v.name == e.control_variant, "weight": v.weight,
                                "lane": lane, "retrieval_version": v.retrieval_version,
                                "ranking_version": v.ranking_version, "units": m.get("units", 0),
                                "exposures": m.get("exposures", 0),
                                "fallback_exposures": fallback.get("degraded_exposures", {}).get(v.name, 0),
                                "fallback_rate": fallback.get("rates", {}).get(v.name),
                                "fallback_p_value": fallback.get("p_values", {}).get(v.name),
                                "fallback_reasons": fallback.get("reasons", {}).get(v.name, {})})
        if d is None:
            return out
        out["report"] = d  # the experiments package's own object, as the CLI's --json prints it
        out["decision"] = decision_text(d)
        out["decision_withheld"] = d["decision_withheld"]
        out["srm"] = d["srm"]
        out["fallback"] = {k: fallback.get(k) for k in ("flagged", "threshold")} if fallback else None
        out["conflicting_units"] = d["conflicting_units"]
        primary_metric = d["primary_metric"]
        planned = r.experiment.analysis  # the frozen plan's settings when there is one
        out.update(primary_metric=primary_metric, method=planned.method, alpha=planned.alpha,
                   equivalence_margin=planned.equivalence_margin)
        for metric in [primary_metric, *(m for m in sources.experiment_metric_names() if m != primary_metric)]:
            a = r if metric == primary_metric else sources.report(e, frames, self._plan_or_none(e.name), metric)
            out["metrics"].append(self._metric_block(e, a, metric, metric == primary_metric))
        return out

    def _plan_or_none(self, name: str):
        plan = self._plan(name)
        return None if isinstance(plan, NotAvailable) else plan

    def _metric_block(self, e, a, metric: str, is_primary: bool) -> dict[str, Any]:
        block: dict[str, Any] = {"metric": metric, "primary": is_primary, "arms": {}, "comparisons": []}
        for arm, m in a.metrics.items():
            value, var = m.estimate(metric)
            block["arms"][arm] = {"units": int(m.units), "value": _num(value), "se": _num(math.sqrt(var))
                                  if var is not None and var == var and var >= 0 else None}
        for c in a.comparisons:
            p, d = c.path, c.decision
            looks = [{"look": i + 1, "time": datetime.fromtimestamp(float(t), tz=UTC).isoformat(timespec="seconds"),
                      "estimate": _num(p.estimate[i]), "lower": _num(p.lower[i]), "upper": _num(p.upper[i]),
                      "p_value": _num(p.p_value[i]) if p.p_value.size else None} for i, t in enumerate(p.ts)]
            title = (f"{e.name}: {c.treatment} - {d.control}, {metric} ({d.method}); "
                     f"band = {'always-valid confidence sequence' if d.method == 'msprt' else 'repeated CI'}")
            svg = interval_plot(p.estimate.tolist(), p.lower.tolist(), p.upper.tolist(),
                                look_labels=[f"look {x['look']} ({x['time']})" for x in looks], title=title,
                                y_label=f"diff in {metric}",
                                margin=a.experiment.analysis.equivalence_margin if is_primary else None,
                                stop_index=sources.stop_index(p))
            block["comparisons"].append({
                "treatment": c.treatment, "control": d.control, "method": d.method, "label": d.label,
                "estimate": _num(d.estimate), "lower": _num(d.lower), "upper": _num(d.upper),
                "p_value": _num(d.p_value), "reason": d.reason, "looks": looks, "svg": svg,
                "decisions": {m: {"label": x.label, "estimate": _num(x.estimate), "lower": _num(x.lower),
                                  "upper": _num(x.upper), "reason": x.reason} for m, x in c.decisions.items()},
            })
        return block


# ------------------------------------------------------------------ downloads
def without_svg(detail: dict[str, Any]) -> dict[str, Any]:
    out = dict(detail)
    out["metrics"] = [{**m, "comparisons": [{k: v for k, v in c.items() if k != "svg"} for c in m["comparisons"]]}
                      for m in detail.get("metrics", [])]
    return out


def summary_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["experiment", "layer", "share_percent", "status", "arms", "metric", "method", "units", "srm",
                "plan_id", "decision"])
    for r in rows:
        w.writerow([r["name"], r["layer"], r["share_percent"], r["status"],
                    " ".join(f"{a['name']}:{a['weight']:g}" for a in r["arms"]), r["metric"], r["method"],
                    r["units"], r["srm"], r["plan_id"], r["decision"]])
    return buf.getvalue()


def looks_csv(detail: dict[str, Any]) -> str:
    """One row per metric, treatment and look: the plotted numbers."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["experiment", "metric", "primary", "treatment", "control", "method", "look", "time", "estimate",
                "lower", "upper", "p_value", "decision"])
    for m in detail.get("metrics", []):
        for c in m["comparisons"]:
            for look in c["looks"]:
                w.writerow([detail["name"], m["metric"], m["primary"], c["treatment"], c["control"], c["method"],
                            look["look"], look["time"], look["estimate"], look["lower"], look["upper"],
                            look["p_value"], c["label"]])
    return buf.getvalue()
