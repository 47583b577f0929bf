"""Time-based train / validation / test splits.

Two protocols, because they answer different questions:

* ``leave_last_out``: each user's last distinct item goes to test, the one before to validation
  (the RecBole / SASRec protocol; every user with enough history is evaluated);
* ``global_time``: one cut in time for everybody (what production sees: the future is unknown
  for all users at once; no leakage of later trends into training).

Targets are the items a user interacted with in the held-out part that are *not* already in
their training history — recommending something already consumed is filtered at serving time,
so it must not count as a hit offline either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

SplitProtocol = Literal["leave_last_out", "global_time"]


@dataclass
class Split:
    """Three event frames that never overlap in (user, time)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    protocol: str

    def targets(self, part: Literal["validation", "test"] = "test") -> dict[int, np.ndarray]:
        """Held-out items per user, minus anything the user already has in train (and validation for test)."""
        held = self.validation if part == "validation" else self.test
        seen = self.train if part == "validation" else pd.concat([self.train, self.validation])
        seen_pairs = set(zip(seen["user_id"].to_numpy(), seen["item_id"].to_numpy(), strict=True))
        out: dict[int, list[int]] = {}
        for u, i in zip(held["user_id"].to_numpy(), held["item_id"].to_numpy(), strict=True):
            if (u, i) not in seen_pairs:
                out.setdefault(int(u), []).append(int(i))
        return {u: np.unique(np.asarray(v, dtype=np.int64)) for u, v in out.items()}


def leave_last_out(events: pd.DataFrame, min_history: int = 3) -> Split:
    """Per user: last distinct item -> test, previous distinct item -> validation, rest -> train.

    Users with fewer than ``min_history`` distinct items stay entirely in train.
    """
    ev = events.sort_values(["user_id", "timestamp"], kind="stable")
    first = ev.drop_duplicates(["user_id", "item_id"], keep="first")
    first = first.assign(_rank=first.groupby("user_id").cumcount(ascending=False))
    n_distinct = first.groupby("user_id")["item_id"].transform("size")
    eligible = n_distinct >= min_history
    test_pairs = first[eligible & (first["_rank"] == 0)][["user_id", "item_id", "timestamp"]]
    val_pairs = first[eligible & (first["_rank"] == 1)][["user_id", "item_id", "timestamp"]]
    # Everything of a user from the moment their validation item first appears is held out.
    cut_val = val_pairs.set_index("user_id")["timestamp"]
    cut_test = test_pairs.set_index("user_id")["timestamp"]
    tv = ev["user_id"].map(cut_val)
    tt = ev["user_id"].map(cut_test)
    is_test = tt.notna() & (ev["timestamp"] >= tt)
    is_val = tv.notna() & (ev["timestamp"] >= tv) & ~is_test
    return Split(
        train=ev[~is_test & ~is_val].reset_index(drop=True),
        validation=ev[is_val].reset_index(drop=True),
        test=ev[is_test].reset_index(drop=True),
        protocol="leave_last_out",
    )


def global_time(events: pd.DataFrame, validation_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Cut at global time quantiles: the last ``test_fraction`` of events is test, the slice before validation."""
    if not 0 < validation_fraction < 1 or not 0 < test_fraction < 1 or validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction and test_fraction must be in (0, 1) and sum to less than 1")
    ts = events["timestamp"]
    t_val = ts.quantile(1 - validation_fraction - test_fraction)
    t_test = ts.quantile(1 - test_fraction)
    ev = events.sort_values("timestamp", kind="stable")
    return Split(
        train=ev[ev["timestamp"] < t_val].reset_index(drop=True),
        validation=ev[(ev["timestamp"] >= t_val) & (ev["timestamp"] < t_test)].reset_index(drop=True),
        test=ev[ev["timestamp"] >= t_test].reset_index(drop=True),
        protocol="global_time",
    )


def split_events(events: pd.DataFrame, protocol: SplitProtocol = "global_time", **kwargs) -> Split:
    """Dispatch by protocol name (the CLI and configs use the name)."""
    if protocol == "leave_last_out":
        return leave_last_out(events, **kwargs)
    if protocol == "global_time":
        return global_time(events, **kwargs)
    raise ValueError(f"unknown split protocol {protocol!r}; use 'leave_last_out' or 'global_time'")
