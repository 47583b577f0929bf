"""recsys.features: Feast feature repository, offline/online features and event ingestion.

Public API (see docs/features.md and docs/contracts.md)::

    FeatureStoreConfig, build_offline_features, apply, materialize, MaterializeStats,
    get_training_features, RANKER_FEATURES, OnlineFeatureClient, OnlineFeatures,
    ingest_event, ingest_events, IngestResult, EventValidationError, FeatureStoreUnavailable

Names are resolved lazily so ``import recsys.features`` (and the CLI) does not import Feast.
"""

from __future__ import annotations

import importlib

from recsys.features.config import FeatureStoreConfig
from recsys.features.errors import EventValidationError, FeatureStoreError, FeatureStoreUnavailable
from recsys.features.feast_import import skip_feast_typechecks
from recsys.features.schema import RANKER_FEATURES

skip_feast_typechecks()  # before any module here imports Feast (see feast_import.py)

_LAZY = {
    "build_offline_features": "recsys.features.offline",
    "OfflineBuildStats": "recsys.features.offline",
    "apply": "recsys.features.store",
    "materialize": "recsys.features.store",
    "MaterializeStats": "recsys.features.store",
    "get_training_features": "recsys.features.store",
    "feature_store": "recsys.features.store",
    "OnlineFeatureClient": "recsys.features.online",
    "OnlineFeatures": "recsys.features.online",
    "ingest_event": "recsys.features.ingest",
    "ingest_events": "recsys.features.ingest",
    "IngestResult": "recsys.features.ingest",
    "EventIngestor": "recsys.features.ingest",
    "EventLog": "recsys.features.event_log",
    "read_log": "recsys.features.event_log",
}

__all__ = ["RANKER_FEATURES", "EventValidationError", "FeatureStoreConfig", "FeatureStoreError",
           "FeatureStoreUnavailable", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recsys.features' has no attribute {name!r}")
