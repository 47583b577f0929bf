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

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

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


def plans_root(cfg_plans_dir: Path | None, experiments_config: Path) -> Path:
    """Where the frozen plans live: the configured folder, else beside the config (as `recsys experiments report`)."""
    from recsys.experiments.frozen_plan import PlanStore

    return Path(cfg_plans_dir) if cfg_plans_dir is not None else PlanStore.beside(experiments_config).root


def read_plan(root: Path, experiment: str):
    """The experiment's newest frozen plan, None when it has none yet, NotAvailable when unreadable.

    Read-only: ``PlanStore.load`` only lists and reads; the console never calls ``freeze``/``replan`` (which write).
    """
    from recsys.experiments.frozen_plan import PlanStore

    try:
        return PlanStore(root).load(experiment)
    except (ValueError, OSError) as e:
        return NotAvailable(str(e))


def report(experiment, frames, plan, metric: str | None = None):
    """``recsys.experiments.analysis.experiment_report``: the CLI report's analysis (ITT arms, SRM gate, plan).

    ``plan`` None analyses with a plan made in memory from the config (nothing is written). ``metric`` other
    than the plan's primary one re-runs the plan's settings on that metric; its τ is not pre-registered (the
    frozen τ is on the primary metric's scale): it is shown with the plan's group-sequential looks (no τ needed)
    where the plan has ``max_units_per_variant``, else the mSPRT with a τ from the pre-period only (usually none,
    and the page says the mSPRT did not run), and labelled secondary.
    """
    from recsys.experiments.analysis import experiment_report

    if metric is None:
        return experiment_report(experiment, frames, plan)
    planned = plan.apply(experiment) if plan is not None else experiment
    if metric == planned.analysis.primary_metric:
        return experiment_report(experiment, frames, plan)
    update: dict = {"primary_metric": metric, "tau": None, "baseline": None}
    if planned.analysis.max_units_per_variant is not None:
        update["method"] = "group_sequential"  # needs no τ; the mSPRT's τ was only planned for the primary metric
    analysis_cfg = planned.analysis.model_copy(update=update)
    return experiment_report(planned.model_copy(update={"analysis": analysis_cfg}), frames, None)


def plan_text(analysis, frozen: bool) -> str:
    """The plan as the CLI report says it (id, τ and its source, the looks, α); unfrozen plans say so."""
    from dataclasses import replace

    from recsys.experiments.report import plan_line

    return plan_line(analysis if frozen else replace(analysis, plan=None))


def stop_index(path) -> int | None:
    """The look at which the decision was first reached (the report's own rule), for the plot's marker."""
    from recsys.experiments.report import _stop_index

    return _stop_index(SimpleNamespace(decision=path.decision, path=path))


def experiment_metric_names() -> list[str]:
    from recsys.experiments.config import Analysis

    return list(Analysis.model_fields["primary_metric"].annotation.__args__)


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
    """The event stream's key names (stream, consumer group's stream, dead-letter stream)."""
    from recsys.features.keys import OverlayKeys

    return OverlayKeys(project)


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
        """Entries in the dead-letter stream (XLEN; 0 when it does not exist): `recsys events dlq list` shows them."""
        return self._guard(lambda: int(self.client.xlen(self.keys.dead_letters)))

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
