"""Request-level errors the pipeline raises and the API maps to HTTP status codes."""

from __future__ import annotations


class RequestLimitError(ValueError):
    """A request is well-formed but over a configured limit; ``field`` names it (-> HTTP 422)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class UnknownItemError(KeyError):
    """The item is in no loaded catalog (-> HTTP 404)."""


class NotReadyError(RuntimeError):
    """Models not loaded yet (-> HTTP 503)."""
