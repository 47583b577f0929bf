"""A small real world for the console: a model store, a simulated experiment, Redis, a live /metrics.

Everything is real: versions written through the model store, an exposure log written by the
experiments package's simulator through the real router, the online-store keys in the real Redis
(db RECSYS_TEST_REDIS_DB, under a test-only Feast project), and serving's own ``ServingMetrics``
registry exposed over HTTP with traffic recorded into it while the tests run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ports import free_port

READ_KEY = "console-test-read-key"
PROJECT = "consoletest"

EXPERIMENTS_YAML = """
version: 1
layers:
  - name: models
experiments:
  - name: ranker_rollout
    description: Ranker v2 against the promoted ranker.
    layer: models
    layer_share: 60
    start: 2026-01-01T00:00:00Z
    variants:
      - {name: control, weight: 50}
      - {name: treatment, weight: 50, ranking_version: v2}
    analysis: {primary_metric: ctr, method: msprt, tau: 0.02, look_every_units: 100, max_units_per_variant: 1000}
  - name: retrieval_probe
    layer: models
    layer_share: 40
    start: 2026-01-01T00:00:00Z
    variants:
      - {name: control, weight: 50}
      - {name: ann, weight: 50, retrieval_version: v1}
    analysis: {primary_metric: conversion, method: group_sequential, max_units_per_variant: 2000, looks: 5}
"""


@dataclass
class ConsoleWorld:
    root: Path
    model_store: Path
    experiments_yaml: Path
    exposure_log: Path
    feature_repo: Path
    redis_url: str
    metrics_url: str
    plan_id: str = ""


def _gate(passed: bool, diff: float) -> dict:
    return {"passed": passed, "window": "time2", "n_users": 400,
            "reason": "CI of the difference excludes zero" if passed else "CI of the difference includes zero",
            "metrics": {"recall@20": {"pipeline": 0.09 + diff, "retrieval": 0.09, "diff": diff,
                                      "lo": diff - 0.004, "hi": diff + 0.004},
                        "ndcg@20": {"pipeline": 0.06 + diff, "retrieval": 0.06, "diff": diff / 2,
                                    "lo": diff / 2 - 0.003, "hi": diff / 2 + 0.003}}}


def _write_models(root: Path) -> None:
    from recsys.platform.model_store import ModelStore

    store = ModelStore(root)
    for version, recall, seconds in (("v1", 0.091, 41.5), ("v2", 0.097, 44.0)):
        with store.write_version("two_tower", version, kind="retrieval",
                                 metrics={"val_recall@20": recall, "loss": 5.1 - recall},
                                 params={"train_seconds": seconds, "epochs": 3}, data_hash="a1b2c3d4e5f6a7b8") as d:
            (d / "weights.bin").write_bytes(b"\0" * 64)
    for version, passed, diff in (("v1", True, 0.008), ("v2", False, 0.001)):
        with store.write_version("ranker", version, kind="ranking",
                                 metrics={"test": {"recall@20": 0.09 + diff, "ndcg@20": 0.06 + diff},
                                          "gate": _gate(passed, diff)},
                                 params={"train_seconds": 12.5}, data_hash="a1b2c3d4e5f6a7b8") as d:
            (d / "ranker.pt").write_bytes(b"\1" * 32)
    store.promote("two_tower", "v2")
    store.promote("ranker", "v1")


def _write_online_store(redis_url: str, feature_repo: Path) -> None:
    import redis

    from recsys.features.online import materialization_key
    from recsys.features.realtime import OverlayKeys

    keys = OverlayKeys(PROJECT)
    r = redis.Redis.from_url(redis_url)
    r.delete(keys.stream, keys.touched, keys.dead_letters, materialization_key(PROJECT))
    for i in range(2):  # what the consumer moves there after max_deliveries (recsys events dlq list)
        r.xadd(keys.dead_letters, {"id": f"1-{i}", "error": "bad event", "e": "{}"})
    for i in range(5):
        r.xadd(keys.stream, {"e": json.dumps({"user_id": i, "item_id": 1, "event_type": "click"})})
    r.xgroup_create(keys.stream, "online", id="0")
    r.xreadgroup("online", "test-consumer", {keys.stream: ">"}, count=2)  # 2 pending, 3 undelivered
    r.incr(materialization_key(PROJECT))
    r.incr(materialization_key(PROJECT))
    now_ms = int(r.time()[0]) * 1000
    r.zadd(keys.touched, {"1": now_ms - 4000})
    r.close()
    (feature_repo / "offline").mkdir(parents=True)
    (feature_repo / "offline" / "metadata.json").write_text(json.dumps(
        {"first_snapshot": "2026-11-01T00:00:00+00:00", "last_snapshot": "2026-12-01T00:00:00+00:00"}))


class ServingTraffic:
    """Serving's real metrics registry on an HTTP port, with requests recorded in a background thread."""

    def __init__(self):
        from prometheus_client import start_http_server

        from recsys.serving.http.observability import RequestContext
        from recsys.serving.pipeline.metrics import ServingMetrics

        self.metrics = ServingMetrics()
        self.metrics.set_versions({"retrieval": "v2", "ranking": "v1"})
        # serving's own event-stream collector (recsys_event_log_refused_total{reason}, dead-lettered, ...)
        # over the attributes the real stream and consumer keep
        from types import SimpleNamespace

        from recsys.serving.http.events import _EventStreamCollector

        pipeline = SimpleNamespace(ingestor=SimpleNamespace(stream=SimpleNamespace(refused_full=3, refused_oom=0)),
                                   consumer=SimpleNamespace(stats=SimpleNamespace(dead_lettered=2,
                                                                                  invalidation_failures=1)))
        self.metrics.registry.register(_EventStreamCollector(pipeline))
        self._ctx = RequestContext
        self.server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.metrics.registry)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, daemon=True)
        self._loop.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            ctx = self._ctx(request_id=str(i), method="POST", path="/v1/recommendations",
                            endpoint="/v1/recommendations", status=503 if i % 50 == 0 else 200)
            for stage, seconds in (("retrieval", 0.004), ("ranking", 0.009), ("hydration", 0.002)):
                self.metrics.stage_seconds.labels(stage).observe(seconds * (1 + (i % 7) / 3))
            if i % 10 == 0:
                self.metrics.degraded.labels("ranker_unavailable").inc()
            self.metrics.observe_request(ctx, 0.012 + (i % 13) / 1000)
            self._stop.wait(0.01)

    def close(self) -> None:
        self._stop.set()
        self._loop.join(timeout=2)
        self.server.shutdown()
        self.server.server_close()


FALLBACK_REASONS = {"treatment": "experiment_version_unavailable", "control": "retrieval_shard_unavailable"}


def _log_fallbacks(directory: Path) -> None:
    """Three served-worse exposures per ranker_rollout arm, with their reasons (the page lists them per arm)."""
    from recsys.experiments.exposure_log import ExposureLog, read_log

    ex = read_log(directory).exposures
    ex = ex[ex["experiment"] == "ranker_rollout"]
    with ExposureLog(directory, fsync="never") as log:
        for arm, reason in FALLBACK_REASONS.items():
            for _, row in ex[ex["variant"] == arm].head(3).iterrows():
                fallback = arm == "treatment"  # treatment's version missing: logged as fallback
                log.log_exposure(row["unit_id"], "ranker_rollout", "fallback" if fallback else arm,
                                 f"{row['request_id']}-again", float(row["ts"]) + 1.0, [1], layer=row["layer"],
                                 assigned_variant=arm if fallback else None,
                                 fallback_reason=reason if fallback else None, degraded=[reason])


@pytest.fixture(scope="session")
def console_world(tmp_path_factory, redis_url):
    from recsys.experiments.config import load_config
    from recsys.experiments.simulation import write_synthetic_log

    root = tmp_path_factory.mktemp("console_world")
    world = ConsoleWorld(root=root, model_store=root / "models", experiments_yaml=root / "experiments.yaml",
                         exposure_log=root / "exposures", feature_repo=root / "features", redis_url=redis_url,
                         metrics_url="")
    _write_models(world.model_store)
    world.experiments_yaml.write_text(EXPERIMENTS_YAML)
    # the traffic was routed 70/30 in retrieval_probe while the config says 50/50: a real sample ratio mismatch
    skewed = tmp_path_factory.mktemp("skewed") / "experiments.yaml"
    probe_arms = "{name: control, weight: 50}\n      - {name: ann, weight: 50"
    skewed.write_text(EXPERIMENTS_YAML.replace(
        probe_arms, "{name: control, weight: 70, lane: 70}\n      - {name: ann, weight: 30, lane: 30"))
    rates = {"control": 0.10, "treatment": 0.16, "ann": 0.10}
    write_synthetic_log(load_config(skewed), world.exposure_log, units=1500, click_rate=rates, seed=3)
    _log_fallbacks(world.exposure_log)
    # ranker_rollout's plan is frozen the way the first `recsys experiments report` freezes it;
    # retrieval_probe has none yet (the console must show that, and must not write one)
    from recsys.experiments.exposure_log import read_log
    from recsys.experiments.frozen_plan import PlanStore

    config = load_config(world.experiments_yaml)
    world.plan_id = PlanStore.beside(world.experiments_yaml).freeze(config.experiment("ranker_rollout"),
                                                                    read_log(world.exposure_log)).plan_id
    _write_online_store(redis_url, world.feature_repo)
    traffic = ServingTraffic()
    world.metrics_url = traffic.url
    yield world
    traffic.close()


@pytest.fixture(scope="session")
def console_server(console_world):
    """``recsys console`` itself, started as a user would, against the world above; yields its base URL."""
    port = free_port()
    env = {**os.environ, "RECSYS_MODEL_STORE_URI": str(console_world.model_store),
           "RECSYS_REDIS_URL": console_world.redis_url, "RECSYS_FEATURE_REPO_DIR": str(console_world.feature_repo),
           "RECSYS_CONSOLE_READ_KEY": READ_KEY}
    cmd = [str(Path(sys.executable).parent / "recsys"), "console", "--port", str(port), "--feature-project", PROJECT,
           "--experiments", str(console_world.experiments_yaml), "--exposure-log", str(console_world.exposure_log),
           "--metrics-url", console_world.metrics_url, "--scrape-interval-s", "0.5", "--refresh-s", "30"]
    log = open(console_world.root / "console.log", "w")  # noqa: SIM115 - closed after the process ends
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"recsys console exited: {(console_world.root / 'console.log').read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError(f"recsys console did not answer: {(console_world.root / 'console.log').read_text()}")
    time.sleep(1.2)  # two scrapes of /metrics, so the serving page has a rate and a plot
    # the first experiments page computes every report (seconds on a busy 2-core machine); pay it once here,
    # so the tests' 10 s timeouts measure the pages, not the first analysis
    warm = httpx.get(f"{base}/experiments.json", headers={"X-API-Key": READ_KEY}, timeout=120)
    assert warm.status_code == 200, warm.text
    yield base
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
