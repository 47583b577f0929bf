"""Exploration slot for brand-new items (cold-start items): Thompson sampling, or LinUCB per variant.

LinUCB (contextual, shared across items, state in Redis) lives in :mod:`recsys.serving.pipeline.exploration.linucb`;
:func:`exploration_policy` reads which one a request uses from the experiment variant's parameters.

New items have no interactions, so no model can rank them well. With probability
``rate`` a request gets one exploration slot: every eligible new item draws from its
Beta(1 + clicks, 1 + impressions - clicks) posterior and the best draw takes the slot. Items that
get clicked keep winning; items shown often without clicks fade out. Posteriors live in memory
per ingress replica (cheap, lossy on restart); issue 7 may move them to Redis (same interface).

**Every eligible new item takes part, and the logged propensity is its marginal probability (issue 23).**
Before, the draw ran over a random pool (the clicked items plus 256 sampled ones) and the logged
propensity was the pick probability *given that pool*, which was not logged: an item in a catalog of
1,000 never-clicked new items was logged at about 1/256 while it was shown 1/1000 of the time, so IPS
weights were 4x too small. Now no pool is sampled, so there is no hidden randomness left: the slot is
exact Thompson sampling over all eligible new items, at a cost that does not grow with their number in
Python terms. Never-clicked items with the same number of impressions share one posterior
Beta(1, 1 + shown), so they are one *group*: the group's best draw is the maximum of m i.i.d. draws
(one inverse-CDF draw), and the winner inside a group is uniform among its m members. Columns are the
clicked items (each its own Beta) plus one per group (:class:`SlotArms`).

The propensity of the shown item has no closed form for many Beta arms. It is a Rao-Blackwellised
Monte Carlo estimate: over ``mc_draws`` fresh draws of *the other* columns, the mean of the exact
probability that the item's own posterior beats their maximum (Beta survival function). That is
unbiased, never 0, independent of the real pick, and far less noisy than counting wins (which could
not see probabilities below 1/mc_draws and had to be floored).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

MIN_PROPENSITY = 1e-12  # a numerically underflowed probability is logged as this, never as 0 (IPS divides)


def _counts(table: dict[int, int], ids: np.ndarray) -> np.ndarray:
    """``table[i]`` (0 when absent) for every id in ``ids``, vectorised (the dict has one entry per shown item)."""
    out = np.zeros(len(ids), np.float64)
    if table and len(ids):
        keys = np.fromiter(table.keys(), np.int64, len(table))
        vals = np.fromiter(table.values(), np.float64, len(table))
        order = np.argsort(keys)
        keys, vals = keys[order], vals[order]
        pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
        hit = keys[pos] == ids
        out[hit] = vals[pos[hit]]
    return out


@dataclass(frozen=True)
class SlotArms:
    """One decision's eligible new items as columns: each clicked item, then one column per group.

    A group is every never-clicked item with the same posterior Beta(1, b): exchangeable, so the group's
    best draw stands for all of them and the winner inside it is uniform (see the module docstring).
    """

    clicked: np.ndarray  # ids of the eligible items with >= 1 click
    a: np.ndarray  # their Beta(a, b) posteriors
    b: np.ndarray
    group_b: np.ndarray  # Beta(1, group_b) of each group
    groups: tuple[np.ndarray, ...]  # the ids in each group

    @classmethod
    def build(cls, eligible: np.ndarray, clicks: np.ndarray, shown: np.ndarray) -> SlotArms:
        """Columns of ``eligible`` given each item's clicks and impressions (O(n), no sort of the n items)."""
        beta = 1 + np.maximum(shown - clicks, 0)
        hit = clicks > 0
        fresh = ~hit & (shown == 0)  # never shown: usually nearly all of them, Beta(1, 1)
        seen = ~hit & ~fresh
        uniq, inverse = np.unique(beta[seen], return_inverse=True)  # only the shown ones are sorted
        order = np.argsort(inverse, kind="stable")
        groups = list(np.split(eligible[seen][order], np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1])
                      if len(uniq) else [])
        group_b = uniq.astype(np.float64)
        if fresh.any():
            groups.insert(0, eligible[fresh])
            group_b = np.concatenate([[1.0], group_b])
        return cls(eligible[hit], 1 + clicks[hit], beta[hit], group_b, tuple(groups))

    @property
    def columns(self) -> int:
        return len(self.clicked) + len(self.groups)

    def size(self, col: int) -> int:
        """How many items the column stands for (1 for a clicked item)."""
        return 1 if col < len(self.clicked) else len(self.groups[col - len(self.clicked)])

    def keys(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        """[rows, columns] keys ``-log(1 - X)`` of each column's best draw X (same argmax as the draws)."""
        keys = np.empty((rows, self.columns))
        k = len(self.clicked)
        if k:
            keys[:, :k] = beta_draw_keys(rng, self.a, self.b, rows)
        if self.groups:  # max of m i.i.d. Exp(1) / b: inverse CDF of (1 - e^-t)^m
            m = np.fromiter((len(g) for g in self.groups), np.float64, len(self.groups))
            with np.errstate(divide="ignore"):
                keys[:, k:] = -np.log(-np.expm1(np.log(rng.random((rows, len(m)))) / m)) / self.group_b
        return keys

    def survival(self, col: int, t: np.ndarray) -> np.ndarray:
        """P(the column's key > t), exactly."""
        k = len(self.clicked)
        if col < k:  # 1 - X ~ Beta(b, a): P(1 - X < e^-t)
            from scipy.special import betainc

            return betainc(self.b[col], self.a[col], np.exp(-t))
        m, b = len(self.groups[col - k]), self.group_b[col - k]
        with np.errstate(divide="ignore"):
            return -np.expm1(m * np.log1p(-np.exp(-b * t)))

    def item(self, rng: np.random.Generator, col: int) -> int:
        k = len(self.clicked)
        if col < k:
            return int(self.clicked[col])
        group = self.groups[col - k]
        return int(group[rng.integers(len(group))])

    def propensity(self, rng: np.random.Generator, col: int, mc_draws: int) -> float:
        """P(Thompson sampling shows one given item of column ``col``): Rao-Blackwellised Monte Carlo.

        Over ``mc_draws`` fresh draws of the other columns, the mean of P(col's key > their maximum),
        divided by the column's size (the item's share of its group).
        """
        if self.columns == 1:
            return 1.0 / self.size(col)
        keys = self.keys(rng, mc_draws)
        keys[:, col] = -np.inf
        p = float(self.survival(col, keys.max(axis=1)).mean()) / self.size(col)
        return max(p, MIN_PROPENSITY)


class ThompsonExplorer:
    def __init__(self, new_item_ids: np.ndarray, rate: float, seed: int | None = None):
        self.new_item_ids = np.unique(np.asarray(new_item_ids, np.int64))  # sorted
        self.rate = float(rate)
        self._rng = np.random.default_rng(seed)
        self._impressions: dict[int, int] = {}
        self._clicks: dict[int, int] = {}
        self._lock = threading.Lock()

    def is_new(self, item_id: int) -> bool:
        i = int(np.searchsorted(self.new_item_ids, item_id))
        return bool(i < len(self.new_item_ids) and self.new_item_ids[i] == item_id)

    def should_explore(self, rate: float | None = None) -> bool:
        """The per-request coin flip (checked before any other exploration work)."""
        with self._lock:
            return bool(self._rng.random() < (self.rate if rate is None else rate))

    @staticmethod
    def _ids(eligible: np.ndarray) -> np.ndarray:
        """Sorted unique ids (the stage passes a masked slice of the sorted ``new_item_ids``: checked, not sorted)."""
        eligible = np.asarray(eligible, np.int64)
        return eligible if np.all(eligible[1:] > eligible[:-1]) else np.unique(eligible)

    def _arms(self, eligible: np.ndarray) -> SlotArms:
        """The decision's columns (call under the lock)."""
        return SlotArms.build(eligible, _counts(self._clicks, eligible), _counts(self._impressions, eligible))

    def pick(self, eligible: np.ndarray, rate: float | None = None) -> int | None:
        """An item id from ``eligible`` (a subset of new items) for the slot, or None this time."""
        rate = self.rate if rate is None else rate
        eligible = self._ids(eligible)
        with self._lock:
            if len(eligible) == 0 or self._rng.random() >= rate:
                return None
            arms = self._arms(eligible)
            return arms.item(self._rng, int(np.argmax(arms.keys(self._rng, 1)[0])))

    def pick_with_propensity(self, eligible: np.ndarray, mc_draws: int = 256) -> tuple[int, float] | None:
        """(item, probability that Thompson sampling over *all* of ``eligible`` picks it), None if empty.

        ``eligible`` is every new item the request may show (the stage passes the whole filtered set, no
        sample), so the probability is the marginal one that off-policy evaluation needs. It is an
        unbiased Monte Carlo estimate (:meth:`SlotArms.propensity`; relative error about 1/sqrt(mc_draws)
        or less), floored at ``MIN_PROPENSITY``.
        """
        eligible = self._ids(eligible)
        if len(eligible) == 0:
            return None
        with self._lock:
            arms = self._arms(eligible)
            col = int(np.argmax(arms.keys(self._rng, 1)[0]))
            item = arms.item(self._rng, col)
            return item, arms.propensity(self._rng, col, mc_draws)

    def add_new_items(self, item_ids: np.ndarray) -> None:
        """Items posted to the catalog after start-up join the new-item pool at once."""
        with self._lock:
            self.new_item_ids = np.union1d(self.new_item_ids, np.asarray(item_ids, np.int64))

    def record_impression(self, item_id: int) -> None:
        with self._lock:
            self._impressions[int(item_id)] = self._impressions.get(int(item_id), 0) + 1

    def record_click(self, item_id: int) -> None:
        with self._lock:
            self._clicks[int(item_id)] = self._clicks.get(int(item_id), 0) + 1

    def posterior(self, item_id: int) -> tuple[int, int]:
        """(alpha, beta) of the item's Beta posterior."""
        c, n = self._clicks.get(int(item_id), 0), self._impressions.get(int(item_id), 0)
        return 1 + c, 1 + max(n - c, 0)


def beta_draw_keys(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, rows: int) -> np.ndarray:
    """[rows, len(a)] keys ``-log(1 - X)`` of draws X ~ Beta(a, b) per column: same argmax as the draws.

    Thompson sampling only needs which arm draws highest, and the key is increasing in X. For
    Beta(1, b) the key is simply ``E / b`` with E ~ Exp(1) (inverse CDF ``X = 1 - U ** (1 / b)``): one
    exponential draw and a division instead of the two gamma draws ``Generator.beta`` needs.
    """
    keys = rng.standard_exponential((rows, len(a))) / b
    clicked = np.flatnonzero(a != 1.0)
    if len(clicked):
        keys[:, clicked] = -np.log1p(-rng.beta(a[clicked], b[clicked], size=(rows, len(clicked))))
    return keys


EXPLORATION_POLICIES = ("thompson", "linucb")


def exploration_policy(params: dict, default: str = "thompson") -> str:
    """The slot's policy for a request: the variant's ``exploration`` parameter if valid, else ``default``."""
    value = str(params.get("exploration", default)).lower()
    return value if value in EXPLORATION_POLICIES else default


def exploration_rate(params: dict, default: float, max_rate: float) -> float:
    """The share of requests given the slot: the variant's ``exploration_rate`` capped, else ``default``.

    The cap (``ServingConfig.exploration_max_rate``) bounds what any experiment variant can spend on
    exploring; ``default`` is the operator's ``exploration_rate`` and is used as configured.
    """
    if "exploration_rate" not in params:
        return float(default)  # the operator's own setting is not an experiment: not capped
    try:
        rate = float(params["exploration_rate"])
    except (TypeError, ValueError):
        return float(min(default, max_rate))
    if not np.isfinite(rate):
        return float(min(default, max_rate))
    return float(min(max(rate, 0.0), max_rate))


def slate_propensities(n_ranked: int, slot_rate: float, pool_nonempty: bool) -> np.ndarray:
    """Propensity of each ranked item being in the shown list when a slot may displace the last one.

    The ranked list is deterministic given the request, so every item is shown with probability 1,
    except the last, which the exploration item pushes out with probability ``slot_rate``.
    """
    p = np.ones(n_ranked)
    if n_ranked and pool_nonempty:
        p[-1] = 1.0 - slot_rate
    return p
