"""Data of the models pages: every model and version from the model store, and a diff of two versions.

A version row says whether it is promoted (what serving loads) and which experiment arms name it, its
headline metrics, the promotion gate's verdict with the paired CI of each gated metric, the training time
and the hash of the data it was trained on. Everything comes from ``metadata.json`` via the store's own
reader; nothing is written (no verify, no promote).
"""

from __future__ import annotations

import math
from typing import Any

from recsys.console import sources
from recsys.console.sources import NotAvailable
from recsys.console.svg import ci_bars

HEADLINE_PREFIXES = ("recall@", "ndcg@", "val_recall@", "loss", "hitrate@", "map@", "mrr@")


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric leaf as ``a.b.c -> value`` (lists such as training history are left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if _scalar(value):
            out[name] = float(value)
        elif isinstance(value, bool):
            out[name] = 1.0 if value else 0.0
        elif isinstance(value, dict):
            out.update(flatten_metrics(value, f"{name}."))
    return out


def headline(metrics: dict[str, Any], limit: int = 4) -> dict[str, float]:
    """A few top-level scalars worth a table column (recall/ndcg first), else any scalars."""
    flat = {k: v for k, v in flatten_metrics(metrics).items() if not k.startswith("gate.")}
    picked = {k: v for k, v in flat.items() if k.split(".")[-1].startswith(HEADLINE_PREFIXES)}
    return dict(list((picked or flat).items())[:limit])


def gate_view(metrics: dict[str, Any]) -> dict[str, Any] | None:
    gate = metrics.get("gate")
    if not isinstance(gate, dict):
        return None
    rows = []
    for m, v in (gate.get("metrics") or {}).items():
        if isinstance(v, dict) and all(_scalar(v.get(k)) for k in ("diff", "lo", "hi")):
            rows.append({"metric": m, "pipeline": v.get("pipeline"), "retrieval": v.get("retrieval"),
                         "diff": float(v["diff"]), "lo": float(v["lo"]), "hi": float(v["hi"])})
    svg = ci_bars([(r["metric"], r["diff"], r["lo"], r["hi"]) for r in rows],
                  title="promotion gate: paired difference (pipeline - retrieval) with CI") if rows else None
    return {"passed": bool(gate.get("passed")), "window": gate.get("window"), "n_users": gate.get("n_users"),
            "reason": gate.get("reason"), "rows": rows, "svg": svg}


def train_seconds(meta: dict[str, Any]) -> float | None:
    for section in ("metrics", "params"):
        v = (meta.get(section) or {}).get("train_seconds")
        if _scalar(v):
            return float(v)
    return None


def experiment_uses(config) -> dict[tuple[str, str], list[str]]:
    """(model kind, version id) -> ["experiment/variant", ...] for every arm that names a model version.

    An arm names a version per role (``retrieval_version``, ``ranking_version``); serving loads it from the
    model of that kind, so a version id only counts for models of the matching kind.
    """
    uses: dict[tuple[str, str], list[str]] = {}
    if config is None or isinstance(config, NotAvailable):
        return uses
    for e in config.experiments:
        for v in e.variants:
            for role, version in (("retrieval", v.retrieval_version), ("ranking", v.ranking_version)):
                if version:
                    uses.setdefault((role, version), []).append(f"{e.name}/{v.name}")
    return uses


class ModelsPage:
    def __init__(self, model_store_uri: str):
        self.uri = model_store_uri

    def _store(self):
        return sources.open_model_store(self.uri)

    def models(self, experiments_config=None) -> list[dict[str, Any]] | NotAvailable:
        try:
            store = self._store()
            names = store.list_models()
        except sources.model_store_errors() as e:
            return NotAvailable(f"model store {self.uri}: {e}")
        uses = experiment_uses(experiments_config)
        out = []
        for name in names:
            try:
                promoted = store.promoted(name)
                versions = store.list_versions(name)
            except sources.model_store_errors() as e:
                out.append({"name": name, "error": str(e), "versions": [], "promoted": None})
                continue
            rows = []
            for mv in reversed(versions):  # newest first
                meta = mv.metadata
                rows.append({"version": mv.version, "kind": mv.kind, "created_at": meta.get("created_at"),
                             "promoted": mv.version == promoted, "experiments": uses.get((mv.kind, mv.version), []),
                             "headline": headline(mv.metrics), "gate": gate_view(mv.metrics),
                             "train_seconds": train_seconds(meta), "data_hash": meta.get("data_hash")})
            out.append({"name": name, "promoted": promoted, "versions": rows})
        return out

    def version(self, name: str, version: str) -> dict[str, Any] | NotAvailable:
        """One version's record; NotAvailable(field="version") when the store has no such version."""
        try:
            store = self._store()
            mv = store.get(name, version)
            promoted = store.promoted(name)
            others = [v.version for v in store.list_versions(name)]
        except sources.model_store_errors() as e:
            return NotAvailable(str(e), field="version")
        meta = mv.metadata
        params = {k: v for k, v in (meta.get("params") or {}).items() if k != "history"}
        return {"name": name, "version": version, "kind": mv.kind, "promoted": promoted == version,
                "created_at": meta.get("created_at"), "data_hash": meta.get("data_hash"),
                "train_seconds": train_seconds(meta), "metrics": flatten_metrics(mv.metrics),
                "gate": gate_view(mv.metrics), "params": params, "files": sorted(meta.get("files") or {}),
                "versions": others}

    def diff(self, name: str, a: str, b: str) -> dict[str, Any] | NotAvailable:
        """Every numeric metric of either version: a, b and b - a."""
        store = self._store()
        metrics = {}
        for field, version in (("a", a), ("b", b)):
            try:
                metrics[field] = store.get(name, version).metrics
            except sources.model_store_errors() as e:
                return NotAvailable(str(e), field=field)
        ma, mb = metrics["a"], metrics["b"]
        versions = [v.version for v in store.list_versions(name)]
        fa, fb = flatten_metrics(ma), flatten_metrics(mb)
        rows = []
        for key in sorted(set(fa) | set(fb)):
            va, vb = fa.get(key), fb.get(key)
            rows.append({"metric": key, "a": va, "b": vb,
                         "delta": (vb - va) if va is not None and vb is not None else None})
        return {"name": name, "a": a, "b": b, "rows": rows, "versions": versions}
