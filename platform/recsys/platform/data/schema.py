"""The one definition of what an interaction dataset looks like.

Every producer (synthetic generator, MovieLens loaders) returns a :class:`Dataset`; every
consumer (features, training, evaluation, serving catalog) reads these columns by these
names.  Keeping the schema in one module means a column rename is a one-line change and a
loader bug is caught by :meth:`Dataset.validate` instead of deep inside a training job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

EVENT_TYPES: tuple[str, ...] = ("view", "click", "purchase", "rating")
"""Implicit events (view < click < purchase) plus explicit ratings (value 1..5)."""

EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "purchase": 4.0, "rating": 3.0}
"""Default implicit-feedback confidence per event type (ratings scale by value/5)."""

EVENT_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "event_type": "object",
    "rating": "float32",  # NaN unless event_type == "rating"
    "timestamp": "datetime64[ns, UTC]",
}
ITEM_COLUMNS: dict[str, str] = {
    "item_id": "int64",
    "title": "object",
    "genres": "object",  # "|"-separated genre names, MovieLens style
    "description": "object",
    "created_at": "datetime64[ns, UTC]",
    "available": "bool",
}
USER_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "signup_at": "datetime64[ns, UTC]",
    "country": "object",
}


class DatasetError(ValueError):
    """Raised when a dataset file or frame does not match the schema; says where."""


@dataclass
class Dataset:
    """Events plus the item catalog and user table they refer to."""

    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    name: str = "dataset"
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ checks
    def validate(self) -> Dataset:
        """Check columns, dtypes and referential integrity; raise DatasetError naming the problem."""
        for frame_name, frame, cols in (
            ("events", self.events, EVENT_COLUMNS),
            ("items", self.items, ITEM_COLUMNS),
            ("users", self.users, USER_COLUMNS),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise DatasetError(f"{self.name}: {frame_name} is missing columns {missing}")
        bad_types = set(self.events["event_type"].unique()) - set(EVENT_TYPES)
        if bad_types:
            raise DatasetError(f"{self.name}: events has unknown event_type values {sorted(bad_types)}")
        unknown_items = ~self.events["item_id"].isin(self.items["item_id"])
        if unknown_items.any():
            row = int(np.flatnonzero(unknown_items.to_numpy())[0])
            raise DatasetError(
                f"{self.name}: events row {row} refers to item_id {self.events['item_id'].iloc[row]} "
                "that is not in the item catalog"
            )
        unknown_users = ~self.events["user_id"].isin(self.users["user_id"])
        if unknown_users.any():
            row = int(np.flatnonzero(unknown_users.to_numpy())[0])
            raise DatasetError(
                f"{self.name}: events row {row} refers to user_id {self.events['user_id'].iloc[row]} "
                "that is not in the user table"
            )
        if self.items["item_id"].duplicated().any():
            raise DatasetError(f"{self.name}: items has duplicate item_id values")
        return self

    # ------------------------------------------------------------- properties
    @property
    def n_users(self) -> int:
        return int(len(self.users))

    @property
    def n_items(self) -> int:
        return int(len(self.items))

    def content_hash(self) -> str:
        """Stable hash of the events, recorded in model metadata so a model names its data."""
        h = hashlib.sha256()
        ev = self.events
        for col in ("user_id", "item_id"):
            h.update(np.ascontiguousarray(ev[col].to_numpy(np.int64)).tobytes())
        h.update(np.ascontiguousarray(ev["timestamp"].astype("int64").to_numpy()).tobytes())
        h.update("|".join(ev["event_type"].astype(str).unique()).encode())
        h.update(str(len(self.items)).encode())
        return h.hexdigest()[:16]

    # -------------------------------------------------------------------- I/O
    def save(self, directory: str | Path) -> Path:
        """Write events/items/users as parquet plus a small JSON manifest."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.events.to_parquet(out / "events.parquet", index=False)
        self.items.to_parquet(out / "items.parquet", index=False)
        self.users.to_parquet(out / "users.parquet", index=False)
        manifest = {
            "name": self.name,
            "n_events": int(len(self.events)),
            "n_items": self.n_items,
            "n_users": self.n_users,
            "content_hash": self.content_hash(),
            "meta": self.meta,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        """Read a directory written by :meth:`save`."""
        src = Path(directory)
        for part in ("events.parquet", "items.parquet", "users.parquet"):
            if not (src / part).exists():
                raise DatasetError(
                    f"{src / part} does not exist: generate data first (`recsys data generate --out {src}`)"
                )
        manifest = {}
        if (src / "manifest.json").exists():
            manifest = json.loads((src / "manifest.json").read_text())
        return cls(
            events=pd.read_parquet(src / "events.parquet"),
            items=pd.read_parquet(src / "items.parquet"),
            users=pd.read_parquet(src / "users.parquet"),
            name=manifest.get("name", src.name),
            meta=manifest.get("meta", {}),
        ).validate()


def genre_vocabulary(items: pd.DataFrame) -> list[str]:
    """Sorted list of all genre names in the catalog (index 0 is reserved for padding by users)."""
    genres: set[str] = set()
    for g in items["genres"].astype(str):
        genres.update(x for x in g.split("|") if x)
    return sorted(genres)
