"""Reading serving's ``/metrics`` text: scrapes kept over time, rates and histogram quantiles between them.

The console scrapes the same registry Prometheus does, so the serving page shows the numbers a Grafana
panel would: a counter's rate is the increase between two scrapes over their time apart, and a latency
quantile is read from the histogram buckets' increase with Prometheus's ``histogram_quantile`` rule
(linear inside the bucket). With a single scrape the cumulative counts since the server started are used.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    at: float  # time.time() of the scrape
    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
        return cls(at, samples)

    def total(self, name: str, where: Callable[[dict[str, str]], bool] | None = None) -> float:
        return sum(v for (n, labels), v in self.samples.items() if n == name and (where is None or where(dict(labels))))

    def by_label(self, name: str, label: str, where: Callable[[dict[str, str]], bool] | None = None
                 ) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n == name and label in d and (where is None or where(d)):
                out[d[label]] = out.get(d[label], 0.0) + v
        return out

    def buckets(self, histogram: str, where: Callable[[dict[str, str]], bool] | None = None) -> dict[float, float]:
        """Cumulative bucket counts by upper bound, summed over the other labels."""
        out: dict[float, float] = {}
        for (n, labels), v in self.samples.items():
            d = dict(labels)
            if n == f"{histogram}_bucket" and (where is None or where(d)):
                le = float(d["le"])
                out[le] = out.get(le, 0.0) + v
        return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus ``histogram_quantile``: linear interpolation inside the bucket holding rank q·N."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return prev_bound  # above the last finite bucket: its bound is the best we know
            span = count - prev_count
            return prev_bound + (b - prev_bound) * ((rank - prev_count) / span if span > 0 else 1.0)
        prev_bound, prev_count = b, count
    return prev_bound


def increase(new: dict, old: dict | None) -> dict:
    """new - old per key (a counter reset, e.g. a restarted replica, counts from zero again)."""
    if old is None:
        return dict(new)
    out = {}
    for k, v in new.items():
        d = v - old.get(k, 0.0)
        out[k] = v if d < 0 else d
    return out


class ScrapeHistory:
    """The last ``size`` scrapes (thread-safe), and the window arithmetic over them."""

    def __init__(self, size: int):
        self._scrapes: deque[Scrape] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, scrape: Scrape) -> None:
        with self._lock:
            self._scrapes.append(scrape)

    def scrapes(self) -> list[Scrape]:
        with self._lock:
            return list(self._scrapes)

    def window(self, seconds: float) -> tuple[Scrape | None, Scrape | None]:
        """(oldest scrape at least ``seconds`` old — or the oldest kept —, newest); old is None with one scrape."""
        scrapes = self.scrapes()
        if not scrapes:
            return None, None
        newest = scrapes[-1]
        older = [s for s in scrapes[:-1] if newest.at - s.at >= seconds]
        old = older[-1] if older else (scrapes[0] if len(scrapes) > 1 else None)
        return old, newest
