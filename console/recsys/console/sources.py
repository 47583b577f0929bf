"""Every read the console makes of another component, in one adapter module.

Why one module: experiments, the event stream and the log layout are changing under other issues. The
pages depend only on what these functions return; when a component grows a better API (an experiment
report object, a dead-letter stream, partitioned logs), this is the one file to re-point. A source that
does not exist in this version, or cannot be reached, comes back as :class:`NotAvailable` with the
reason, and the page shows "not available: <reason>" instead of failing.

Everything here reads: the model store is only listed, the logs only read, and Redis only gets GET,
XINFO, XLEN, ZREVRANGE and INFO (no command that writes). The console cannot open Redis "read-only"
at the protocol level; give it a Redis ACL user limited to those commands in production
(docs/console.md).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx


@dataclass(frozen=True)
class NotAvailable:
    """A source that does not exist yet or could not be read; ``reason`` is shown on the page."""

    reason: str
    field: str | None = None  # the request field that named the missing thing (a 404 names it)

    def __str__(self) -> str:
        return f"not available: {self.reason}"


# ------------------------------------------------------------------ experiments
def load_experiments(path: Path | None):
    """The experiments config, or NotAvailable (no file configured, missing or invalid)."""
    if path is None:
        return NotAvailable("no experiments config given (recsys console --experiments FILE)")
    from recsys.experiments.config import ConfigError, load_config

    try:
        return load_config(path)
    except (ConfigError, OSError) as e:
        return NotAvailable(f"experiments config {path}: {e}")


def read_exposure_log(log_dir: Path):
    """Exposure and outcome frames of the log directory (empty frames when it holds no file yet)."""
    from recsys.experiments.exposure_log import read_log

    if not Path(log_dir).exists():
        return NotAvailable(f"exposure log {log_dir} does not exist")
    try:
        return read_log(log_dir)
    except (FileNotFoundError, ValueError) as e:
        return NotAvailable(f"exposure log {log_dir}: {e}")


def analyze(experiment, frames, metric: str | None = None):
    """The experiments package's own analysis (metrics, SRM, sequential paths) for one metric.

    ``metric`` other than the configured primary one re-runs the same plan on that metric; its τ is not
    pre-registered (explicit τ/baseline are on the primary metric's scale), so the page labels it secondary.
    """
    from recsys.experiments.analysis import analyze_experiment

    if metric is not None and metric != experiment.analysis.primary_metric:
        analysis_cfg = experiment.analysis.model_copy(update={"primary_metric": metric, "tau": None, "baseline": None})
        experiment = experiment.model_copy(update={"analysis": analysis_cfg})
    return analyze_experiment(experiment, frames)


def plan_text(analysis) -> str:
    """The pre-registered parts of the test (τ and its source, where the looks are), as the CLI report says it."""
    from recsys.experiments.report import plan_line

    return plan_line(analysis)


def stop_index(path) -> int | None:
    """The look at which the decision was first reached (the report's own rule), for the plot's marker."""
    from recsys.experiments.report import _stop_index

    return _stop_index(SimpleNamespace(decision=path.decision, path=path))


def experiment_metric_names() -> list[str]:
    from recsys.experiments.config import Analysis

    return list(Analysis.model_fields["primary_metric"].annotation.__args__)


def arm_counts(frames, experiment_name: str) -> dict[str, dict[str, int]]:
    """Per variant: exposed units and exposures (today's API: units by their first variant)."""
    from recsys.experiments.analysis import exposure_counts

    return exposure_counts(frames, experiment_name)


def fallback_counts(frames, experiment_name: str) -> dict[str, dict[str, Any]]:
    """Per assigned arm: exposures served as ``fallback`` and their reasons (from the exposure log)."""
    ex = frames.exposures
    ex = ex[(ex["experiment"] == experiment_name) & (ex["variant"] == "fallback")]
    out: dict[str, dict[str, Any]] = {}
    for arm, group in ex.groupby(ex["assigned_variant"].fillna("?").astype(str)):
        reasons = group["fallback_reason"].fillna("?").astype(str).value_counts()
        out[str(arm)] = {"exposures": int(len(group)), "reasons": {str(k): int(v) for k, v in reasons.items()}}
    return out


def experiment_status(experiment, now) -> str:
    if experiment.is_active(now):
        return "running"
    if experiment.start is not None and now < experiment.start:
        return "scheduled"
    return "ended"


# ---------------------------------------------------------------------- models
def open_model_store(uri: str):
    from recsys.platform.model_store import ModelStore

    return ModelStore(uri)


def model_store_errors() -> tuple[type[BaseException], ...]:
    from recsys.platform.model_store import ModelStoreError

    return (ModelStoreError, OSError, json.JSONDecodeError)


# --------------------------------------------------------------------- serving
def scrape_metrics(url: str, timeout_s: float) -> str | NotAvailable:
    """The Prometheus text of serving's ``/metrics`` (the same registry Prometheus scrapes)."""
    try:
        resp = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as e:
        return NotAvailable(f"{url} unreachable ({type(e).__name__})")
    if resp.status_code != 200:
        return NotAvailable(f"{url} answered HTTP {resp.status_code}")
    return resp.text


def _overlay_keys(project: str):
    """The event stream's key names; ``recsys.features.keys`` once the stream work lands, else realtime's."""
    try:
        module = importlib.import_module("recsys.features.keys")
    except ModuleNotFoundError:
        module = importlib.import_module("recsys.features.realtime")
    return module.OverlayKeys(project)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisReader:
    """The online store's health numbers, read with non-writing commands only."""

    def __init__(self, redis_url: str, project: str, timeout_s: float):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors = (redis.exceptions.RedisError, OSError)
        # No retries: a page draw must not wait out redis-py's default back-off once per number.
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry=Retry(NoBackoff(), 0))
        self.project = project
        self.keys = _overlay_keys(project)

    def _guard(self, fn):
        try:
            return fn()
        except self._errors as e:
            return NotAvailable(f"Redis error: {type(e).__name__}: {e}")

    def reachable(self):
        """True, or NotAvailable with the reason (checked once per page, so a dead Redis costs one timeout)."""
        return self._guard(lambda: bool(self.client.ping()))

    def materialization_version(self):
        from recsys.features.online import materialization_key

        return self._guard(lambda: int(self.client.get(materialization_key(self.project)) or 0))

    def consumer_lag(self):
        """Entries not yet applied by the consumer group 'online': pending + not yet delivered."""
        def read():
            if not self.client.exists(self.keys.stream):
                return NotAvailable(f"no event stream {self.keys.stream} yet")
            groups = {_text(g["name"]): g for g in self.client.xinfo_groups(self.keys.stream)}
            g = groups.get("online")
            if g is None:
                return NotAvailable("no consumer group 'online' on the event stream (no consumer started yet)")
            return {"pending": int(g.get("pending") or 0), "lag": int(g.get("lag") or 0),
                    "stream_length": int(self.client.xlen(self.keys.stream))}
        return self._guard(read)

    def dead_letters(self):
        key = getattr(self.keys, "dead_letters", None)
        if key is None:
            return NotAvailable("this version has no dead-letter stream")
        return self._guard(lambda: int(self.client.xlen(key)))

    def last_realtime_update_ms(self):
        """Server time (ms) of the newest applied real-time event (the overlay's 'touched' set)."""
        def read():
            newest = self.client.zrevrange(self.keys.touched, 0, 0, withscores=True)
            return int(newest[0][1]) if newest else NotAvailable("no real-time event applied yet")
        return self._guard(read)

    def server_time_s(self):
        return self._guard(lambda: (lambda t: t[0] + t[1] / 1e6)(self.client.time()))

    def memory(self):
        def read():
            info = self.client.info("memory")
            return {k: info.get(k) for k in ("used_memory", "used_memory_human", "used_memory_peak_human",
                                             "maxmemory", "maxmemory_human", "maxmemory_policy")}
        return self._guard(read)

    def close(self) -> None:
        self.client.close()


def offline_build(repo_dir: Path):
    """The offline feature build's metadata (snapshot range): how fresh the materialized rows can be."""
    # recsys.features.offline.METADATA_FILE; that module is not imported (it pulls the whole build path in)
    path = Path(repo_dir) / "offline" / "metadata.json"
    if not path.exists():
        return NotAvailable(f"{path} does not exist (run `recsys features build`)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return NotAvailable(f"{path}: {e}")
