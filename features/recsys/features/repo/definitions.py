"""Feast objects of the recsys feature repository.

This module reads like a schema: two entities, two offline parquet tables with daily snapshots
(user_features.parquet feeds the two user views, item_stats.parquet and item_profile.parquet the
item views), and two push sources through which the event-ingestion path updates the online store.
Paths depend on where the repo lives, so the objects are built by :func:`build_definitions`;
``feast -c <repo_dir> apply`` works too, through the ``features.py`` shim written next to
feature_store.yaml.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int64

from recsys.features.schema import (
    ITEM_PROFILE_VIEW,
    ITEM_PUSH_SOURCE,
    ITEM_STATS_VIEW,
    USER_CONTEXT_VIEW,
    USER_PUSH_SOURCE,
    USER_STATS_VIEW,
    VIEW_FEATURES,
)

USER_TABLE = "user_features.parquet"
ITEM_STATS_TABLE = "item_stats.parquet"
ITEM_PROFILE_TABLE = "item_profile.parquet"
TIMESTAMP_FIELD = "event_timestamp"

_FEAST_TYPES = {"f32": Float32, "f64": Float64, "i64": Int64, "f32[]": Array(Float32), "i64[]": Array(Int64)}

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
              description="A user of the platform (raw int64 id)")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
              description="A catalog item (raw int64 id)")


def _fields(view: str) -> list[Field]:
    return [Field(name=name, dtype=_FEAST_TYPES[kind]) for name, kind in VIEW_FEATURES[view].items()]


def build_definitions(offline_dir: str | Path) -> dict[str, object]:
    """All Feast objects for the offline tables in ``offline_dir``, by variable name."""
    offline = Path(offline_dir).resolve()

    def source(name: str, table: str) -> FileSource:
        return FileSource(name=name, path=str(offline / table), timestamp_field=TIMESTAMP_FIELD)

    user_source = source("user_features_source", USER_TABLE)
    item_stats_source = source("item_stats_source", ITEM_STATS_TABLE)
    item_profile_source = source("item_profile_source", ITEM_PROFILE_TABLE)
    # Push sources: ingest_event writes the updated user/item rows here (online only); their batch
    # source is the snapshot table that materialization reads.
    user_push = PushSource(name=USER_PUSH_SOURCE, batch_source=user_source)
    item_push = PushSource(name=ITEM_PUSH_SOURCE, batch_source=item_stats_source)

    # ttl=0: a snapshot row stays valid until the next one (rows are written only when a value changes).
    no_ttl = timedelta(0)
    user_stats = FeatureView(
        name=USER_STATS_VIEW, entities=[user], ttl=no_ttl, schema=_fields(USER_STATS_VIEW), source=user_push,
        online=True, description="Per-user event counts over 7d/30d/all, recency, genres, recent items",
    )
    user_context = FeatureView(
        name=USER_CONTEXT_VIEW, entities=[user], ttl=no_ttl, schema=_fields(USER_CONTEXT_VIEW),
        source=user_push, online=True,
        description="When the user is active: 4-hour UTC buckets and days of week (user x context affinities)",
    )
    item_stats = FeatureView(
        name=ITEM_STATS_VIEW, entities=[item], ttl=no_ttl, schema=_fields(ITEM_STATS_VIEW), source=item_push,
        online=True, description="Per-item popularity over 7d/30d/all, CTR, conversion, average rating",
    )
    item_profile = FeatureView(
        name=ITEM_PROFILE_VIEW, entities=[item], ttl=no_ttl, schema=_fields(ITEM_PROFILE_VIEW),
        source=item_profile_source, online=True,
        description="Static item content: genres, hashed TF-IDF text embedding, creation time",
    )
    return {
        "user": user, "item": item,
        "user_features_source": user_source, "item_stats_source": item_stats_source,
        "item_profile_source": item_profile_source, "user_events_push": user_push, "item_events_push": item_push,
        "user_stats": user_stats, "user_context": user_context, "item_stats": item_stats,
        "item_profile": item_profile,
    }
