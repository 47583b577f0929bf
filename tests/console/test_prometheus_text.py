"""The serving page's arithmetic over scrapes of a real prometheus_client registry."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from recsys.console.prometheus_text import Scrape, ScrapeHistory, increase, quantile


def _registry():
    """A fresh registry whose metric names no earlier test used.

    Importing Feast (``feast.metrics``, pulled in by other tests of the session) switches
    prometheus_client into multiprocess mode for the whole process: values then live in mmap files
    keyed by metric name and labels, not by registry, so a second ``lat_seconds{endpoint="a"}`` would
    start from the first one's counts (the window test read 0.0746 instead of 0.0796 after the
    quantile test). Unique names keep each test's histogram its own.
    """
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    reg = CollectorRegistry()
    hist = Histogram(f"{prefix}lat_seconds", "latency", ["endpoint"], buckets=(0.01, 0.02, 0.04, 0.08), registry=reg)
    count = Counter(f"{prefix}req_total", "requests", ["status"], registry=reg)
    return reg, hist, count, prefix


def test_quantiles_follow_prometheus_histogram_quantile():
    reg, hist, _, p = _registry()
    for _ in range(50):
        hist.labels("a").observe(0.005)  # bucket (0, 0.01]
    for _ in range(50):
        hist.labels("b").observe(0.03)  # bucket (0.02, 0.04]
    buckets = Scrape.parse(generate_latest(reg).decode(), 0.0).buckets(f"{p}lat_seconds")
    assert buckets[0.01] == 50 and buckets[0.04] == 100  # summed over the endpoint label
    assert quantile(0.5, buckets) == pytest.approx(0.01)  # rank 50 is the top of the first bucket
    assert quantile(0.75, buckets) == pytest.approx(0.02 + 0.02 * 0.5)  # halfway through (0.02, 0.04]
    assert quantile(0.25, buckets) == pytest.approx(0.005)
    assert quantile(0.5, {}) is None and quantile(0.5, {float("inf"): 0.0}) is None


def test_window_increase_and_counter_reset():
    reg, hist, count, p = _registry()
    history = ScrapeHistory(size=10)
    count.labels("200").inc(10)
    history.add(Scrape.parse(generate_latest(reg).decode(), 100.0))
    count.labels("200").inc(30)
    count.labels("503").inc(2)
    for _ in range(4):
        hist.labels("a").observe(0.07)
    history.add(Scrape.parse(generate_latest(reg).decode(), 110.0))
    old, new = history.window(60)
    assert (old.at, new.at) == (100.0, 110.0)  # not 60 s of history yet: the oldest kept
    assert new.total(f"{p}req_total") - old.total(f"{p}req_total") == 32
    by_status = increase(new.by_label(f"{p}req_total", "status"), old.by_label(f"{p}req_total", "status"))
    assert by_status == {"200": 30, "503": 2}
    lat = increase(new.buckets(f"{p}lat_seconds"), old.buckets(f"{p}lat_seconds"))
    assert quantile(0.99, lat) == pytest.approx(0.04 + 0.04 * 0.99)
    assert increase({"n": 3.0}, {"n": 40.0}) == {"n": 3.0}  # a restarted replica counts from zero again
