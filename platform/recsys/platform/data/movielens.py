"""Loaders for the real MovieLens formats (ml-100k ``u.data``/``u.item``; ml-latest ``ratings.csv``/``movies.csv``).

MovieLens has explicit ratings only; each rating becomes a ``rating`` event plus an implicit
``view`` (and a ``click`` for ratings >= 4) so that implicit-feedback models and the ranking
model have the event types they expect.  Parsing is strict: the first bad line is reported with
file, line number and column, because silently skipping rows would change the evaluation.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.platform.data.schema import Dataset, DatasetError

_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def _parse_int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path}:{line}: column '{column}' is not an integer: {value!r}") from None


def _parse_rating(value: str, path: Path, line: int) -> float:
    try:
        r = float(value)
    except ValueError:
        raise DatasetError(f"{path}:{line}: column 'rating' is not a number: {value!r}") from None
    if not 0.5 <= r <= 5.0:
        raise DatasetError(f"{path}:{line}: column 'rating' must be within 0.5..5, got {r}")
    return r


def _rating_row(fields: list[str], path: Path, line: int, names: tuple[str, str, str]) -> tuple[int, int, float, int]:
    """(user, item, rating, unix time) from the 4 fields both formats share; ``names`` are the file's column names."""
    user_col, item_col, ts_col = names
    return (
        _parse_int(fields[0], path, line, user_col),
        _parse_int(fields[1], path, line, item_col),
        _parse_rating(fields[2], path, line),
        _parse_int(fields[3], path, line, ts_col),
    )


def _ratings_to_dataset(rows: list[tuple[int, int, float, int]], items: pd.DataFrame, name: str) -> Dataset:
    arr = np.array(rows, dtype=np.float64)
    users, item_ids, ratings, ts = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], arr[:, 3]
    stamp = pd.to_datetime(ts.astype(np.int64), unit="s", utc=True)
    base = pd.DataFrame({"user_id": users, "item_id": item_ids, "timestamp": stamp})
    views = base.assign(event_type="view", rating=np.nan)
    clicks = base[ratings >= 4].assign(event_type="click", rating=np.nan)
    rates = base.assign(event_type="rating", rating=ratings)
    events = pd.concat([views, clicks, rates], ignore_index=True)
    events["rating"] = events["rating"].astype(np.float32)
    events = events.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)
    events = events[["user_id", "item_id", "event_type", "rating", "timestamp"]]
    known = set(items["item_id"].tolist())
    missing = sorted(set(item_ids.tolist()) - known)
    if missing:
        raise DatasetError(
            f"{name}: ratings refer to {len(missing)} movie ids missing from the movie file, e.g. {missing[:5]}"
        )
    first_seen = events.groupby("user_id")["timestamp"].min()
    users_df = pd.DataFrame(
        {"user_id": first_seen.index.astype(np.int64), "signup_at": first_seen.to_numpy(), "country": "unknown"}
    )
    return Dataset(events=events, items=items, users=users_df, name=name).validate()


def _items_frame(ids: list[int], titles: list[str], genres: list[str]) -> pd.DataFrame:
    years = pd.Series(titles).str.extract(r"\((\d{4})\)\s*$")[0].fillna("1970").astype(int)
    created = pd.to_datetime(years.astype(str) + "-01-01", utc=True)
    return pd.DataFrame(
        {
            "item_id": np.asarray(ids, dtype=np.int64),
            "title": titles,
            "genres": genres,
            "description": [f"{t}. Genres: {g.replace('|', ', ')}." for t, g in zip(titles, genres, strict=True)],
            "created_at": created.to_numpy(),
            "available": True,
        }
    )


def load_ml100k(directory: str | Path) -> Dataset:
    """Load ml-100k: ``u.data`` (tab-separated user item rating timestamp) and ``u.item``."""
    d = Path(directory)
    data_path, item_path = d / "u.data", d / "u.item"
    for p in (data_path, item_path):
        if not p.exists():
            raise DatasetError(f"{p} not found (expected the ml-100k files u.data and u.item)")
    ids, titles, genres = [], [], []
    with item_path.open(encoding="latin-1") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\n").split("|")
            if len(parts) < 5 + len(_ML100K_GENRES):
                raise DatasetError(f"{item_path}:{n}: expected {5 + len(_ML100K_GENRES)} '|'-separated columns")
            ids.append(_parse_int(parts[0], item_path, n, "movie id"))
            titles.append(parts[1])
            flags = parts[5 : 5 + len(_ML100K_GENRES)]
            genres.append("|".join(g for g, f_ in zip(_ML100K_GENRES, flags, strict=True) if f_ == "1") or "unknown")
    rows = []
    with data_path.open() as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if len(parts) != 4:
                raise DatasetError(f"{data_path}:{n}: expected 4 tab-separated columns, got {len(parts)}")
            rows.append(_rating_row(parts, data_path, n, ("user id", "item id", "timestamp")))
    return _ratings_to_dataset(rows, _items_frame(ids, titles, genres), name="ml-100k")


def load_ml_latest(directory: str | Path) -> Dataset:
    """Load ml-latest / ml-25m style ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``."""
    d = Path(directory)
    ratings_path, movies_path = d / "ratings.csv", d / "movies.csv"
    for p in (ratings_path, movies_path):
        if not p.exists():
            raise DatasetError(f"{p} not found (expected ratings.csv and movies.csv)")
    ids, titles, genres = [], [], []
    with movies_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["movieId", "title", "genres"]:
            raise DatasetError(f"{movies_path}:1: expected header movieId,title,genres, got {header}")
        for n, row in enumerate(reader, start=2):
            if len(row) != 3:
                raise DatasetError(f"{movies_path}:{n}: expected 3 columns, got {len(row)}")
            ids.append(_parse_int(row[0], movies_path, n, "movieId"))
            titles.append(row[1])
            genres.append(row[2].replace("(no genres listed)", "unknown"))
    rows = []
    with ratings_path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["userId", "movieId", "rating", "timestamp"]:
            raise DatasetError(f"{ratings_path}:1: expected header userId,movieId,rating,timestamp, got {header}")
        for n, row in enumerate(reader, start=2):
            if len(row) != 4:
                raise DatasetError(f"{ratings_path}:{n}: expected 4 columns, got {len(row)}")
            rows.append(_rating_row(row, ratings_path, n, ("userId", "movieId", "timestamp")))
    return _ratings_to_dataset(rows, _items_frame(ids, titles, genres), name="ml-latest")


def load_movielens(directory: str | Path) -> Dataset:
    """Detect the MovieLens flavour in ``directory`` and load it."""
    d = Path(directory)
    if (d / "u.data").exists():
        return load_ml100k(d)
    if (d / "ratings.csv").exists():
        return load_ml_latest(d)
    raise DatasetError(f"{d}: no MovieLens files found (looked for u.data or ratings.csv)")
