"""In-process cache of decoded online *item* features, by catalog row.

Why: a request ranks ~400 candidates; reading and decoding 400 item hashes from Redis per request
is most of the feature cost, while item features change slowly (materialization, plus windowed
counters from events). The cache keeps each catalog item's decoded columns; a request reads Redis
only for its user row and for candidates never seen before (none, in steady state). Entries older
than ``ttl_s`` are still served while one background read refreshes them (stale-while-revalidate),
so a refresh never adds a round trip to a request. Items outside the catalog are never cached.
``clear()`` drops everything (a new materialization, a test).

Storage is columnar (one array per feature, indexed by catalog row), so lookups and fills are
vectorised: no per-candidate Python work on the request path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


def _as_2d(col: np.ndarray | list) -> np.ndarray:
    """A decoded column -> 1-D float array (scalars) or 2-D zero-padded array (list features)."""
    if isinstance(col, np.ndarray):
        return col
    width = max((len(x) for x in col if isinstance(x, list | tuple)), default=1)
    out = np.zeros((len(col), max(width, 1)), np.float32)
    for i, x in enumerate(col):  # only on a refill, never on a cache hit
        if isinstance(x, list | tuple) and x:
            out[i, : len(x)] = x
    return out


def _fit_width(a: np.ndarray, width: int) -> np.ndarray:
    if a.ndim == 1 or a.shape[1] == width:
        return a
    out = np.zeros((a.shape[0], width), a.dtype)
    w = min(width, a.shape[1])
    out[:, :w] = a[:, :w]
    return out


class ItemFeatureCache:
    """Decoded item feature columns for catalog rows, each entry valid for ``ttl_s`` seconds."""

    def __init__(self, lookup_rows: Callable[[np.ndarray], np.ndarray], n_rows: int, ttl_s: float):
        self.lookup_rows = lookup_rows
        self.n_rows = int(n_rows)
        self.ttl_s = float(ttl_s)
        self._filled_at = np.full(self.n_rows, -np.inf)
        self._cols: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Memory the cached columns hold (the snapshot's footprint per ingress replica)."""
        return int(self._filled_at.nbytes + sum(c.nbytes for c in self._cols.values()))

    def clear(self) -> None:
        with self._lock:
            self._filled_at[:] = -np.inf
            self._cols = {}

    def stale(self, item_ids: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(catalog rows, mask of the items that must be read from the store)."""
        rows, missing, old = self.status(item_ids, now)
        return rows, missing | old

    def status(self, item_ids: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(catalog rows, never cached (or outside the catalog), cached but older than ``ttl_s``)."""
        rows = self.lookup_rows(np.asarray(item_ids, np.int64))
        missing = np.ones(len(rows), bool)
        old = np.zeros(len(rows), bool)
        ok = rows >= 0
        filled = self._filled_at[rows[ok]]
        missing[ok] = ~np.isfinite(filled)
        old[ok] = np.isfinite(filled) & (filled < now - self.ttl_s)
        return rows, missing, old

    def put(self, rows: np.ndarray, cols: dict[str, np.ndarray | list], now: float) -> None:
        """Store freshly read columns for ``rows`` (rows < 0 are skipped)."""
        ok = rows >= 0
        if not ok.any():
            return
        r = rows[ok]
        with self._lock:
            for name, col in cols.items():
                v = _as_2d(col)[ok]
                cur = self._cols.get(name)
                if cur is None:
                    shape = (self.n_rows,) if v.ndim == 1 else (self.n_rows, v.shape[1])
                    cur = np.zeros(shape, v.dtype if v.ndim == 1 else np.float32)
                elif v.ndim == 2 and v.shape[1] > cur.shape[1]:
                    cur = _fit_width(cur, v.shape[1])
                self._cols[name] = cur
                cur[r] = _fit_width(v, cur.shape[1]) if v.ndim == 2 else v
            self._filled_at[r] = now

    def assemble(self, rows: np.ndarray, need: np.ndarray,
                 fresh: dict[str, np.ndarray | list]) -> dict[str, np.ndarray]:
        """Columns for all candidates: cached rows where fresh, the just-read values where ``need``."""
        n = len(rows)
        out: dict[str, np.ndarray] = {}
        if not fresh and not need.any():  # the steady state (every candidate cached): one gather per column
            with self._lock:
                return {name: c[rows].astype(np.float32 if c.ndim == 2 else np.float64, copy=False)
                        for name, c in self._cols.items()}
        cached_pos = np.flatnonzero(~need)
        with self._lock:
            names = set(self._cols) | set(fresh)
            for name in names:
                f = _as_2d(fresh[name]) if name in fresh else None
                c = self._cols.get(name)
                width = max(x.shape[1] if x is not None and x.ndim == 2 else 0 for x in (f, c)) if names else 0
                two_d = width > 0
                col = np.zeros((n, width) if two_d else n, np.float32 if two_d else np.float64)
                if c is not None and len(cached_pos):
                    col[cached_pos] = _fit_width(c[rows[cached_pos]], width) if two_d else c[rows[cached_pos]]
                if f is not None:
                    col[need] = _fit_width(f, width) if two_d else f
                out[name] = col
        return out
