"""Where the ranker's dense features come from: a small interface with two implementations.

* :class:`FeastFeatureSource` asks the feature store (``recsys.features.get_training_features``,
  Feast's point-in-time join over the offline tables) — what production training uses, so the
  numbers match what serving reads online;
* :class:`InlineFeatureSource` computes the same ``RANKER_FEATURES`` columns directly from the
  events strictly before each row's ``event_timestamp`` (no future leakage) and reuses
  ``recsys.features.schema.ranker_matrix`` for the derived (user x item x time) columns — for unit
  tests and for machines where the Feast repo has not been built.

Both return a float32 [N, len(RANKER_FEATURES)] matrix for an ``entity_df`` with columns
``user_id, item_id, event_timestamp`` (raw ids, UTC timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from recsys.platform.data.schema import EVENT_TYPES, EVENT_WEIGHTS, Dataset, genre_vocabulary


class FeatureSource(Protocol):
    names: list[str]

    def training_features(self, entity_df: pd.DataFrame) -> np.ndarray: ...


def ranker_feature_names() -> list[str]:
    from recsys.features.schema import RANKER_FEATURES

    return list(RANKER_FEATURES)


class FeastFeatureSource:
    """Point-in-time features from the Feast offline store (run ``recsys features build`` first)."""

    def __init__(self, feature_store_config):
        self.cfg = feature_store_config
        self.names = ranker_feature_names()

    def training_features(self, entity_df: pd.DataFrame) -> np.ndarray:
        from recsys.features.store import get_training_features

        out = get_training_features(self.cfg, entity_df[["user_id", "item_id", "event_timestamp"]])
        return out[self.names].to_numpy(np.float32)


@dataclass
class _Snapshot:
    """Raw feature arrays of every user / item as of one instant (rows = catalog order)."""

    user: dict[str, np.ndarray]
    item: dict[str, np.ndarray]


class InlineFeatureSource:
    """RANKER_FEATURES computed from ``dataset.events`` with timestamp < each row's event_timestamp.

    Rows are grouped by distinct timestamp and one snapshot of per-user / per-item raw arrays is
    built per timestamp (cached), so the usual case — every row of a training or evaluation set
    at one cut-off time — costs one pass over the events.
    """

    def __init__(self, dataset: Dataset, recent_items: int = 20, chunk_rows: int = 200_000):
        from recsys.features.schema import EVENT_NAMES, WINDOWS

        self.names = ranker_feature_names()
        self._event_names, self._windows = EVENT_NAMES, WINDOWS
        self.recent_items = recent_items
        self.chunk_rows = chunk_rows
        ev = dataset.events.sort_values("timestamp", kind="stable")
        self.user_ids = np.sort(dataset.users["user_id"].to_numpy(np.int64))
        self.item_ids = np.sort(dataset.items["item_id"].to_numpy(np.int64))
        self._u = np.searchsorted(self.user_ids, ev["user_id"].to_numpy(np.int64))
        self._i = np.searchsorted(self.item_ids, ev["item_id"].to_numpy(np.int64))
        self._ts_ns = ev["timestamp"].astype("int64").to_numpy()
        self._etype = pd.Categorical(ev["event_type"], categories=list(EVENT_TYPES)).codes.astype(np.int64)
        self._rating = ev["rating"].to_numpy(np.float32)
        items = dataset.items.set_index("item_id").loc[self.item_ids].reset_index()
        vocab = genre_vocabulary(dataset.items)
        pos = {g: j for j, g in enumerate(vocab)}
        mh = np.zeros((len(items), len(vocab)), dtype=np.float32)
        for r, gs in enumerate(items["genres"].astype(str)):
            for g in gs.split("|"):
                if g in pos:
                    mh[r, pos[g]] = 1.0
        self._multihot = mh
        self._created_s = items["created_at"].astype("int64").to_numpy() / 1e9
        self._cache: dict[int, _Snapshot] = {}

    # ------------------------------------------------------------------ snapshots
    @staticmethod
    def _counts(ent: np.ndarray, etype: np.ndarray, n: int, sel: np.ndarray) -> np.ndarray:
        return np.bincount(ent[sel] * len(EVENT_TYPES) + etype[sel],
                           minlength=n * len(EVENT_TYPES)).reshape(n, len(EVENT_TYPES)).astype(np.float32)

    def snapshot(self, t_ns: int) -> _Snapshot:
        if t_ns in self._cache:
            return self._cache[t_ns]
        from recsys.features.schema import DAYS_OF_WEEK, HOUR_BUCKETS, day_of_week, hour_bucket, smoothed_rate

        end = int(np.searchsorted(self._ts_ns, t_ns, side="left"))  # events strictly before t
        u, i, ts, et, r = self._u[:end], self._i[:end], self._ts_ns[:end], self._etype[:end], self._rating[:end]
        nu, ni = len(self.user_ids), len(self.item_ids)
        user: dict[str, np.ndarray] = {}
        item: dict[str, np.ndarray] = {}
        for suffix, days in self._windows:
            sel = np.ones(end, bool) if days is None else ts >= t_ns - days * 86_400 * 10**9
            cu = self._counts(u, et, nu, sel) if end else np.zeros((nu, len(EVENT_TYPES)), np.float32)
            ci = self._counts(i, et, ni, sel) if end else np.zeros((ni, len(EVENT_TYPES)), np.float32)
            for k, name in enumerate(EVENT_TYPES):
                plural = self._event_names[name]
                user[f"user_{plural}_{suffix}"] = cu[:, k]
                item[f"item_{plural}_{suffix}"] = ci[:, k]
        is_r = ~np.isnan(r)
        for prefix, ent, n, out in (("user", u, nu, user), ("item", i, ni, item)):
            rs = np.bincount(ent[is_r], weights=r[is_r], minlength=n)
            rc = np.bincount(ent[is_r], minlength=n)
            out[f"{prefix}_avg_rating"] = np.where(rc > 0, rs / np.maximum(rc, 1), 0.0).astype(np.float32)
        item["item_ctr_30d"] = smoothed_rate(item["item_clicks_30d"], item["item_views_30d"])
        item["item_cvr_30d"] = smoothed_rate(item["item_purchases_30d"], item["item_clicks_30d"])
        item["item_n_genres"] = self._multihot.sum(axis=1)
        item["item_created_at"] = self._created_s
        item["item_genre_multihot"] = self._multihot
        ts_s = ts / 1e9
        last = np.zeros(nu)
        np.maximum.at(last, u, ts_s)
        user["user_last_event_at"] = last
        # most recent events first (events are time-sorted, so walk backwards per user)
        k = self.recent_items
        recent = np.full((nu, k), -1, dtype=np.int64)
        if end:
            order = np.argsort(u, kind="stable")  # per user, increasing time
            us = u[order]
            starts = np.searchsorted(us, np.arange(nu))
            ends = np.searchsorted(us, np.arange(nu), side="right")
            for j in range(k):
                p = ends - 1 - j
                ok = p >= starts
                recent[ok, j] = self.item_ids[i[order[p[ok]]]]
        user["user_recent_item_ids"] = recent
        w = np.array([EVENT_WEIGHTS[t] for t in EVENT_TYPES])[et] * np.where(is_r, np.nan_to_num(r) / 5.0, 1.0)
        gw = np.zeros((nu, self._multihot.shape[1]))
        ev_i, g_i = np.nonzero(self._multihot[i])
        np.add.at(gw, (u[ev_i], g_i), w[ev_i])
        user["user_genre_weights"] = gw.astype(np.float32)
        hb, dw = hour_bucket(ts_s), day_of_week(ts_s)
        user["user_hour_counts"] = np.bincount(u * HOUR_BUCKETS + hb, minlength=nu * HOUR_BUCKETS).reshape(
            nu, HOUR_BUCKETS).astype(np.float32)
        user["user_dow_counts"] = np.bincount(u * DAYS_OF_WEEK + dw, minlength=nu * DAYS_OF_WEEK).reshape(
            nu, DAYS_OF_WEEK).astype(np.float32)
        snap = _Snapshot(user=user, item=item)
        self._cache[t_ns] = snap
        return snap

    # ------------------------------------------------------------------ assembly
    def features_at(self, t_ns: int, user_index: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """[N, F] for (user row, item row) pairs at instant ``t_ns`` (catalog indices, -1 = unknown)."""
        from recsys.features.schema import ranker_matrix

        snap = self.snapshot(int(t_ns))
        out = np.zeros((len(user_index), len(self.names)), dtype=np.float32)
        for s in range(0, len(user_index), self.chunk_rows):
            uu = np.asarray(user_index[s:s + self.chunk_rows])
            ii = np.asarray(item_index[s:s + self.chunk_rows])
            raw = {k: v[np.maximum(uu, 0)] for k, v in snap.user.items()}
            raw.update({k: v[np.maximum(ii, 0)] for k, v in snap.item.items()})
            item_raw_ids = self.item_ids[np.maximum(ii, 0)]
            out[s:s + len(uu)] = ranker_matrix(raw, item_raw_ids, np.full(len(uu), t_ns / 1e9))
            out[s:s + len(uu)][uu < 0] = 0.0
        return out

    def training_features(self, entity_df: pd.DataFrame) -> np.ndarray:
        uidx = np.searchsorted(self.user_ids, entity_df["user_id"].to_numpy(np.int64))
        uidx = np.where((uidx < len(self.user_ids)) & (self.user_ids[np.minimum(uidx, len(self.user_ids) - 1)]
                                                       == entity_df["user_id"].to_numpy(np.int64)), uidx, -1)
        iidx = np.searchsorted(self.item_ids, entity_df["item_id"].to_numpy(np.int64))
        iidx = np.minimum(iidx, len(self.item_ids) - 1)
        ts = pd.to_datetime(entity_df["event_timestamp"], utc=True).astype("int64").to_numpy()
        out = np.zeros((len(entity_df), len(self.names)), dtype=np.float32)
        for t in np.unique(ts):
            rows = np.flatnonzero(ts == t)
            out[rows] = self.features_at(int(t), uidx[rows], iidx[rows])
        return out


def make_feature_source(kind: str, dataset: Dataset, feature_store_config=None) -> FeatureSource:
    """``inline`` | ``feast`` | ``auto`` (Feast when its offline tables are built from this dataset, else inline)."""
    if kind == "inline":
        return InlineFeatureSource(dataset)
    if kind in ("feast", "auto"):
        built = False
        if feature_store_config is not None:
            try:
                from recsys.features.store import _check_built

                meta = _check_built(feature_store_config)
                registered = feature_store_config.registry_path.exists()  # `recsys features apply` ran
                built = kind == "feast" or (registered and meta.get("dataset_hash") == dataset.content_hash())
            except Exception:  # noqa: BLE001 - not built / not importable -> inline in auto mode
                if kind == "feast":
                    raise
        if built:
            return FeastFeatureSource(feature_store_config)
        if kind == "feast":
            raise RuntimeError("feature source 'feast' requested but no feature store config was given")
    return InlineFeatureSource(dataset)


def features_for(source, t_ns: int, user_index: np.ndarray, item_index: np.ndarray, catalog) -> np.ndarray:
    """Feature-source matrix for (user, item) catalog-index pairs at one instant."""
    if hasattr(source, "features_at"):
        return source.features_at(int(t_ns), user_index, item_index)
    entity_df = pd.DataFrame({
        "user_id": catalog.users.id_of(user_index), "item_id": catalog.items.id_of(item_index),
        "event_timestamp": pd.to_datetime(np.full(len(user_index), t_ns), utc=True),
    })
    return source.training_features(entity_df)
