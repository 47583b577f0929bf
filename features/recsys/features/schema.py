"""Names of every feature and the one function that turns raw feature rows into ranker inputs.

Raw features are what Feast stores (offline parquet and Redis); *derived* features depend on the
request (its time, the candidate item) and are computed by :func:`ranker_matrix` from raw values.
Training (``get_training_features``) and serving (``OnlineFeatureClient.fetch``) both call
:func:`ranker_matrix`, so a ranker sees the same numbers offline and online by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

EVENT_NAMES: dict[str, str] = {"view": "views", "click": "clicks", "purchase": "purchases", "rating": "ratings"}
"""event_type -> the plural used in feature names (``user_clicks_7d``)."""
WINDOWS: tuple[tuple[str, int | None], ...] = (("7d", 7), ("30d", 30), ("all", None))
"""(suffix, days) of the count windows; ``None`` = all history."""
HOUR_BUCKETS = 6  # 4-hour buckets of the UTC hour of day: 0-4, 4-8, ..., 20-24
DAYS_OF_WEEK = 7
TEXT_EMBEDDING_DIM = 16
TEXT_HASH_BUCKETS = 1 << 16
MAX_DAYS_SINCE = 365.0  # recency of a user with no events (and the cap)

# Feature view names (and their online hash-field prefixes).
USER_STATS_VIEW = "user_stats"
USER_CONTEXT_VIEW = "user_context"
ITEM_STATS_VIEW = "item_stats"
ITEM_PROFILE_VIEW = "item_profile"
USER_PUSH_SOURCE = "user_events_push"
ITEM_PUSH_SOURCE = "item_events_push"


def _counts(prefix: str) -> list[str]:
    return [f"{prefix}_{plural}_{suffix}" for suffix, _ in WINDOWS for plural in EVENT_NAMES.values()]


USER_COUNT_FEATURES = _counts("user")
ITEM_COUNT_FEATURES = _counts("item")

# Raw features per view: name -> kind ("f32", "f64", "i64", "f32[]", "i64[]").
USER_STATS_FEATURES: dict[str, str] = {
    **{n: "f32" for n in USER_COUNT_FEATURES},
    "user_avg_rating": "f32",
    "user_last_event_at": "f64",  # unix seconds of the latest event, 0 = none
    "user_recent_item_ids": "i64[]",  # most recent first
    "user_genre_weights": "f32[]",  # event-weighted genre counts over all history (genre vocabulary order)
    "user_top_genres": "i64[]",  # up to 3 genre indices, strongest first
}
USER_CONTEXT_FEATURES: dict[str, str] = {
    "user_hour_counts": "f32[]",  # events per 4-hour UTC bucket
    "user_dow_counts": "f32[]",  # events per day of week (Monday = 0)
}
ITEM_STATS_FEATURES: dict[str, str] = {
    **{n: "f32" for n in ITEM_COUNT_FEATURES},
    "item_ctr_30d": "f32",
    "item_cvr_30d": "f32",
    "item_avg_rating": "f32",
}
ITEM_PROFILE_FEATURES: dict[str, str] = {
    "item_genre_ids": "i64[]",
    "item_genre_multihot": "f32[]",
    "item_n_genres": "f32",
    "item_text_embedding": "f32[]",  # signed hashed TF-IDF of title + description, L2-normalised
    "item_text_hash": "i64",  # hashed id of the item's highest TF-IDF token (a sparse ranker feature)
    "item_created_at": "f64",  # unix seconds
}
VIEW_FEATURES: dict[str, dict[str, str]] = {
    USER_STATS_VIEW: USER_STATS_FEATURES,
    USER_CONTEXT_VIEW: USER_CONTEXT_FEATURES,
    ITEM_STATS_VIEW: ITEM_STATS_FEATURES,
    ITEM_PROFILE_VIEW: ITEM_PROFILE_FEATURES,
}
USER_VIEWS = (USER_STATS_VIEW, USER_CONTEXT_VIEW)
ITEM_VIEWS = (ITEM_STATS_VIEW, ITEM_PROFILE_VIEW)
USER_RAW_FEATURES = {**USER_STATS_FEATURES, **USER_CONTEXT_FEATURES}
ITEM_RAW_FEATURES = {**ITEM_STATS_FEATURES, **ITEM_PROFILE_FEATURES}

RANKER_FEATURES: list[str] = [
    *USER_COUNT_FEATURES,
    "user_avg_rating",
    "user_days_since_last_event",
    *ITEM_COUNT_FEATURES,
    "item_ctr_30d",
    "item_cvr_30d",
    "item_avg_rating",
    "item_n_genres",
    "item_age_days",
    "ui_genre_affinity",  # share of the user's genre weight on the item's genres
    "ui_in_recent",  # 1 if the item is among the user's recent items
    "ctx_hour_affinity",  # share of the user's events in the request's 4-hour bucket
    "ctx_dow_affinity",  # share of the user's events on the request's day of week
]
"""Dense ranker inputs in column order; identical offline (training) and online (serving)."""

RANKER_SOURCES: dict[str, tuple[str, ...]] = {
    "user_days_since_last_event": ("user_last_event_at",),
    "item_age_days": ("item_created_at",),
    "ui_genre_affinity": ("user_genre_weights", "item_genre_multihot", "item_n_genres"),
    "ui_in_recent": ("user_recent_item_ids",),
    "ctx_hour_affinity": ("user_hour_counts",),
    "ctx_dow_affinity": ("user_dow_counts",),
}
"""Raw inputs of each derived ranker feature (the others are raw features themselves)."""


def smoothed_rate(numerator, denominator, prior: float = 0.05, strength: float = 10.0):
    """(n + prior*strength) / (d + strength): a rate that does not jump to 1.0 after one event."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    return ((num + prior * strength) / (den + strength)).astype(np.float32)


def hour_bucket(unix_seconds) -> np.ndarray:
    return ((np.asarray(unix_seconds, dtype=np.int64) // 3600) % 24) // (24 // HOUR_BUCKETS)


def day_of_week(unix_seconds) -> np.ndarray:
    # 1970-01-01 was a Thursday (Monday = 0 -> Thursday = 3).
    return (np.asarray(unix_seconds, dtype=np.int64) // 86400 + 3) % 7


def pad_lists(values, width: int, fill: float = 0.0, dtype=np.float32) -> np.ndarray:
    """A column of variable-length lists (None allowed) -> a dense [N, width] array."""
    out = np.full((len(values), width), fill, dtype=dtype)
    for i, v in enumerate(values):
        if v is None or isinstance(v, float):  # None or NaN (a row the join could not fill)
            continue
        n = min(len(v), width)
        if n:
            out[i, :n] = np.asarray(v, dtype=dtype)[:n]
    return out


def ranker_matrix(raw: Mapping[str, np.ndarray], item_ids: np.ndarray, request_s: np.ndarray) -> np.ndarray:
    """Raw feature columns -> float32 [N, len(RANKER_FEATURES)].

    ``raw`` holds 1-D arrays for scalar features and 2-D padded arrays for list features
    (``user_recent_item_ids`` padded with -1); user arrays may have a leading dimension of 1 and
    are broadcast over the N candidate items.  ``request_s`` is the request (or training label)
    time in unix seconds, scalar or [N].

    User-only columns are computed on the user's own rows (1 at serving time, N in training) and
    broadcast once, when written into the output: serving pays O(N) only for the item columns.
    """
    n = len(item_ids)
    req = np.asarray(request_s, dtype=np.float64).reshape(-1)  # [1] or [N]
    cols: dict[str, np.ndarray] = {}

    last = np.asarray(raw["user_last_event_at"], dtype=np.float64).reshape(-1)
    days = np.clip((req - last) / 86400.0, 0.0, MAX_DAYS_SINCE)
    cols["user_days_since_last_event"] = np.where(last > 0, days, MAX_DAYS_SINCE)
    created = np.asarray(raw["item_created_at"], dtype=np.float64).reshape(-1)
    cols["item_age_days"] = np.where(created > 0, np.maximum((req - created) / 86400.0, 0.0), 0.0)

    gw = np.asarray(raw["user_genre_weights"], dtype=np.float32)
    gw = gw.reshape(1, -1) if gw.ndim == 1 else gw
    mh = np.asarray(raw["item_genre_multihot"], dtype=np.float32)
    g = min(gw.shape[-1], mh.shape[-1])
    share = gw[:, :g] / np.maximum(gw[:, :g].sum(axis=1, keepdims=True), 1e-9)
    n_genres = np.maximum(np.asarray(raw["item_n_genres"], dtype=np.float32).reshape(-1), 1.0)
    affinity = mh[:, :g] @ share[0] if len(share) == 1 else (share * mh[:, :g]).sum(axis=1)
    cols["ui_genre_affinity"] = affinity / n_genres

    recent = np.asarray(raw["user_recent_item_ids"], dtype=np.int64)
    recent = recent if recent.ndim == 2 else recent.reshape(n, -1)
    ids = np.asarray(item_ids, dtype=np.int64)
    if len(recent) == 1:  # one user: a set lookup, not an [N, L] comparison
        cols["ui_in_recent"] = np.isin(ids, recent[0][recent[0] >= 0])
    else:
        cols["ui_in_recent"] = (recent == ids[:, None]).any(axis=1)

    for name, key, idx in (("ctx_hour_affinity", "user_hour_counts", hour_bucket(req)),
                           ("ctx_dow_affinity", "user_dow_counts", day_of_week(req))):
        counts = np.asarray(raw[key], dtype=np.float32)
        counts = counts.reshape(1, -1) if counts.ndim == 1 else counts
        m = max(len(counts), len(idx))
        counts, idx = np.broadcast_to(counts, (m, counts.shape[-1])), np.broadcast_to(idx, (m,))
        total = counts.sum(axis=1)
        cols[name] = np.where(total > 0, counts[np.arange(m), idx] / np.maximum(total, 1e-9), 0.0)

    # One contiguous row per feature, then one transpose copy; assignment casts to float32 exactly as
    # astype would. At serving's N (~500 rows) the per-column call overhead, not the data, was the cost:
    # ~40 x (asarray + reshape + strided write) took 3x what this does (docs/serving.md).
    out_t = np.empty((len(RANKER_FEATURES), n), dtype=np.float32)
    for j, name in enumerate(RANKER_FEATURES):
        col = cols[name] if name in cols else raw[name]
        out_t[j] = col if getattr(col, "ndim", 1) == 1 else np.reshape(col, -1)  # [1] broadcasts over N rows
    out = out_t.T.copy()
    if not np.isfinite(out).all():  # the rare row with a NaN/inf feature: nan_to_num only then
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
