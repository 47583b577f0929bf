"""Errors of the feature store that callers are expected to catch.

Serving catches :class:`FeatureStoreUnavailable` and degrades (popularity fallback) instead of
failing the request; the event API turns :class:`EventValidationError` into an HTTP 4xx naming
``.field``; the CLI turns :class:`FeatureStoreError` into a one-line message.
"""

from __future__ import annotations


class FeatureStoreError(RuntimeError):
    """Something the operator can fix: offline tables not built, repo not applied, bad config."""


class FeatureStoreUnavailable(RuntimeError):
    """The online store (Redis) is down, refused the connection or did not answer in time."""


class EventValidationError(ValueError):
    """An event was rejected before anything was written; ``field`` names the offending field."""

    def __init__(self, field: str, message: str, index: int | None = None):
        self.field = field
        self.index = index  # position in a batch, None for a single event
        where = f"event[{index}]." if index is not None else ""
        super().__init__(f"{where}{field}: {message}")
