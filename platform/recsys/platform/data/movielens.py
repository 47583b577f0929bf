"""Loaders for the real MovieLens formats.

* ml-100k: ``u.data`` (tab-separated) + ``u.item`` (``|``-separated, genre flags);
* ml-1m / ml-10m: ``ratings.dat`` + ``movies.dat`` (``::``-separated; ml-1m also ``users.dat``);
* ml-latest / ml-latest-small / ml-25m: ``ratings.csv`` + ``movies.csv``.

MovieLens has explicit ratings only; each rating above ``max_negative_rating`` becomes a
``rating`` event plus an implicit ``view`` (and a ``click`` for ratings >= 4) so that
implicit-feedback models and the ranking model have the event types they expect.  Ratings at or
below ``max_negative_rating`` (default 2) are *dropped*: every event in a held-out window is an
evaluation target and every event is positive confidence for the implicit models, so a movie
the user disliked must not count as a success (set it to 0 to keep every rating).  Parsing is
strict: the first bad line is reported with file, line number and column, because silently
skipping rows would change the evaluation.
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


DEFAULT_MAX_NEGATIVE_RATING = 2.0
"""Ratings <= this are not positive views (the ``--max-negative-rating`` flag of ``import-movielens``)."""


def _ratings_to_dataset(rows: list[tuple[int, int, float, int]], items: pd.DataFrame, name: str,
                        max_negative_rating: float = DEFAULT_MAX_NEGATIVE_RATING,
                        known_users: set[int] | None = None, drop_unknown_movies: bool = False) -> Dataset:
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    known = np.asarray(sorted(set(items["item_id"].tolist())), dtype=np.int64)
    is_known = np.isin(arr[:, 1].astype(np.int64), known)
    missing = sorted(set(arr[~is_known, 1].astype(np.int64).tolist()))
    if missing and not drop_unknown_movies:
        raise DatasetError(
            f"{name}: ratings refer to {len(missing)} movie ids missing from the movie file, e.g. {missing[:5]} "
            "(--drop-unknown-movies skips those ratings)"
        )
    n_unknown = int((~is_known).sum())
    arr = arr[is_known]
    if known_users is not None:
        unknown = sorted(set(arr[:, 0].astype(np.int64).tolist()) - known_users)
        if unknown:
            raise DatasetError(f"{name}: ratings refer to {len(unknown)} user ids missing from the user file, "
                               f"e.g. {unknown[:5]}")
    n_all = len(arr)
    arr = arr[arr[:, 2] > max_negative_rating]
    if len(arr) == 0:
        raise DatasetError(f"{name}: no rating above max_negative_rating={max_negative_rating} "
                           f"(of {n_all} ratings)")
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
    first_seen = events.groupby("user_id")["timestamp"].min()
    users_df = pd.DataFrame(
        {"user_id": first_seen.index.astype(np.int64), "signup_at": first_seen.to_numpy(), "country": "unknown"}
    )
    meta = {"max_negative_rating": float(max_negative_rating), "ratings_read": int(n_all),
            "ratings_dropped_as_negative": int(n_all - len(arr)), "ratings_dropped_unknown_movie": n_unknown}
    return Dataset(events=events, items=items, users=users_df, name=name, meta=meta).validate()


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


def load_ml100k(directory: str | Path, max_negative_rating: float = DEFAULT_MAX_NEGATIVE_RATING,
                drop_unknown_movies: bool = False) -> Dataset:
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
    return _ratings_to_dataset(rows, _items_frame(ids, titles, genres), name="ml-100k",
                               max_negative_rating=max_negative_rating, drop_unknown_movies=drop_unknown_movies)


def load_ml_latest(directory: str | Path, max_negative_rating: float = DEFAULT_MAX_NEGATIVE_RATING,
                   drop_unknown_movies: bool = False) -> Dataset:
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
    return _ratings_to_dataset(rows, _items_frame(ids, titles, genres), name="ml-latest",
                               max_negative_rating=max_negative_rating, drop_unknown_movies=drop_unknown_movies)


def _dat_lines(path: Path, n_fields: int):
    """``(line number, fields)`` of a ``::``-separated MovieLens file (latin-1, as GroupLens ships it)."""
    with path.open(encoding="latin-1") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("::")
            if len(parts) != n_fields:
                raise DatasetError(f"{path}:{n}: expected {n_fields} '::'-separated columns, got {len(parts)}")
            yield n, parts


def load_ml_dat(directory: str | Path, max_negative_rating: float = DEFAULT_MAX_NEGATIVE_RATING,
                drop_unknown_movies: bool = False) -> Dataset:
    """Load ml-1m / ml-10m: ``ratings.dat`` (UserID::MovieID::Rating::Timestamp), ``movies.dat``
    (MovieID::Title::Genres) and, when present (ml-1m), ``users.dat`` (UserID::Gender::Age::Occupation::Zip),
    which is only used to check that every rating's user exists (the dataset schema has no demographics)."""
    d = Path(directory)
    ratings_path, movies_path, users_path = d / "ratings.dat", d / "movies.dat", d / "users.dat"
    for p in (ratings_path, movies_path):
        if not p.exists():
            raise DatasetError(f"{p} not found (expected ratings.dat and movies.dat)")
    ids, titles, genres = [], [], []
    for n, (mid, title, g) in _dat_lines(movies_path, 3):
        ids.append(_parse_int(mid, movies_path, n, "MovieID"))
        titles.append(title)
        genres.append(g.replace("(no genres listed)", "unknown") or "unknown")
    known_users = None
    if users_path.exists():
        known_users = {_parse_int(parts[0], users_path, n, "UserID") for n, parts in _dat_lines(users_path, 5)}
    rows = [_rating_row(parts, ratings_path, n, ("UserID", "MovieID", "Timestamp"))
            for n, parts in _dat_lines(ratings_path, 4)]
    name = "ml-1m" if known_users is not None else "ml-10m"
    return _ratings_to_dataset(rows, _items_frame(ids, titles, genres), name=name,
                               max_negative_rating=max_negative_rating, known_users=known_users,
                               drop_unknown_movies=drop_unknown_movies)


def load_movielens(directory: str | Path, max_negative_rating: float = DEFAULT_MAX_NEGATIVE_RATING,
                   drop_unknown_movies: bool = False) -> Dataset:
    """Detect the MovieLens flavour in ``directory`` and load it."""
    d = Path(directory)
    if (d / "u.data").exists():
        return load_ml100k(d, max_negative_rating, drop_unknown_movies)
    if (d / "ratings.dat").exists():
        return load_ml_dat(d, max_negative_rating, drop_unknown_movies)
    if (d / "ratings.csv").exists():
        return load_ml_latest(d, max_negative_rating, drop_unknown_movies)
    raise DatasetError(f"{d}: no MovieLens files found (looked for u.data, ratings.dat or ratings.csv)")
