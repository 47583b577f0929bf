"""A user's history: the one definition training, offline evaluation and serving all read.

Why one module: the three used to disagree. Training ordered a user's distinct items by *first*
interaction and kept file order for equal timestamps; the evaluator ordered by *last* interaction and,
sorting descending with a stable sort, put same-second items in reversed file order; serving's seen set
ordered by last interaction and then item id. On MovieLens most positive ratings share their second with
another rating of the same user, so the models were fed a different newest item than they trained on.

The rule (here and only here):

* **order**: by the time of the user's *last* interaction with the item, then by item id (the stable
  tie key every side has: file order does not survive the feature store, an event id is not in the data);
* **repeats**: an item appears once, at its last interaction (a re-watch moves it to the front);
* **length**: the newest :data:`HISTORY_LENGTH` distinct items: the default of ``TrainingConfig.history_length``,
  ``SequentialConfig.max_length`` and serving's ``FeatureStoreConfig.history_items`` (one setting for all
  three; each source then reads its own prefix of that list: item-kNN and the content profile the newest 20,
  :mod:`recsys.platform.ranking_features`). ``tests/training/test_history.py`` checks the order agrees on all three,
  including same-second bursts and repeats.

Dense indices (training, evaluation) and raw ids (serving) order the same way: ``IdIndex`` is sorted, so
ties broken by index equal ties broken by raw id.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

HISTORY_LENGTH = 50
"""The history length of every model input: training, offline evaluation and serving (one setting)."""


def history_order(users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of every distinct (user, item) pair, grouped by user, each user's oldest first.

    Inputs are parallel int64 arrays of events (any order, repeats allowed); ``ts`` any integer clock.
    """
    frame = pd.DataFrame({"u": np.asarray(users, np.int64), "i": np.asarray(items, np.int64),
                          "t": np.asarray(ts, np.int64)})
    last = frame.groupby(["u", "i"], sort=False)["t"].max().reset_index()
    last = last.sort_values(["u", "t", "i"], kind="stable")
    return last["u"].to_numpy(np.int64), last["i"].to_numpy(np.int64)


def distinct_sequences(users: np.ndarray, items: np.ndarray, ts: np.ndarray,
                       n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat items, [n_users + 1] offsets): every user's distinct items in history order, oldest first.

    ``users`` must be dense indices ``0..n_users-1`` (drop unknown ids before calling).
    """
    u, i = history_order(users, items, ts)
    counts = np.bincount(u, minlength=n_users) if len(u) else np.zeros(n_users, np.int64)
    return i, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def newest_first(seq_items: np.ndarray, seq_start: np.ndarray, length: int) -> np.ndarray:
    """[n_users, length]: the newest ``length`` items of each sequence, newest first, ``-1`` padded."""
    n_users = len(seq_start) - 1
    out = np.full((n_users, length), -1, dtype=np.int64)
    counts = np.diff(seq_start)
    take = np.minimum(counts, length)
    rows = np.repeat(np.arange(n_users), take)
    cols = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    src = np.repeat(seq_start[1:], take) - 1 - cols
    out[rows, cols] = seq_items[src]
    return out


def newest_distinct(oldest_first: Sequence[int] | np.ndarray, k: int, tail: int | None = None) -> list[int]:
    """The newest ``k`` distinct ids of an ordered id sequence (oldest first, repeats allowed), newest first.

    Serving's read of the stored seen sequence (the batch part is already in history order; the live
    part appends each event as it is applied). ``tail``: how many trailing entries can hold them, to
    skip sorting thousands of ids per request.
    """
    rev = np.asarray(oldest_first, np.int64)[::-1]
    if tail is not None:
        rev = rev[:tail]
    _, first = np.unique(rev, return_index=True)
    return rev[np.sort(first)][:k].tolist()


def distinct_newest_first(newest_first_ids: Sequence[int] | np.ndarray, k: int | None = None) -> list[int]:
    """A most-recent-first id list with repeats -> its distinct ids, newest first (the models' input)."""
    rev = np.asarray(newest_first_ids, np.int64)[::-1]
    return newest_distinct(rev, len(rev) if k is None else k)
