"""What a stream entry must hold before the consumer applies it: checked on every read, not trusted.

Why check again what the ingestor validated: the stream outlives the code that wrote it. A producer
of another version (a rolling upgrade adding an event type), a hand-written XADD or a bug can put in an
entry the apply step cannot handle, and an entry that raises would be re-read forever. An entry that
fails here is dead-lettered at once (the error is in the entry, a retry cannot fix it); see
:mod:`recsys.features.dead_letters`.

Unknown ``event_type``: dead-lettered (not passed through), so nothing is silently dropped; once the
consumers know the type, ``recsys features dlq replay`` applies it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from recsys.features.schema import EVENT_NAMES

INT64_MAX = 2**63 - 1


class EntryError(ValueError):
    """The entry can never be applied (the message says why)."""


def _field(fields: Mapping, name: str):
    return fields.get(name.encode()) if name.encode() in fields else fields.get(name)


def entry_payload(fields: Mapping | None) -> str:
    """The raw ``e`` field as text ('' when missing), for the dead-letter record."""
    blob = _field(fields or {}, "e")
    if blob is None:
        return ""
    return blob.decode("utf-8", "replace") if isinstance(blob, bytes) else str(blob)


def _id(rec: Mapping, name: str, max_id: int) -> int:
    v = rec.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise EntryError(f"{name} must be an integer id, got {v!r}")
    if not 0 <= v <= max_id:
        raise EntryError(f"{name} {v} is outside 0..{max_id}")
    return v


def parse_entry(fields: Mapping | None, max_id: int = INT64_MAX) -> dict:
    """The event record of one stream entry, or :class:`EntryError` naming what is wrong."""
    if not fields:
        raise EntryError("entry was deleted (trimmed) before it was applied")
    blob = _field(fields, "e")
    if blob is None:
        raise EntryError("entry has no 'e' field")
    try:
        rec = json.loads(blob)
    except (TypeError, ValueError) as e:
        raise EntryError(f"not JSON: {e}") from None
    if not isinstance(rec, dict):
        raise EntryError(f"not a JSON object (a {type(rec).__name__})")
    _id(rec, "user_id", max_id)
    _id(rec, "item_id", max_id)
    etype = rec.get("event_type")
    if etype not in EVENT_NAMES:
        raise EntryError(f"unknown event_type {etype!r} (this consumer knows {sorted(EVENT_NAMES)})")
    ts = rec.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise EntryError(f"ts must be a finite number of unix seconds, got {ts!r}")
    rating = rec.get("rating")
    if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int | float)
                               or not math.isfinite(rating)):
        raise EntryError(f"rating must be a number or null, got {rating!r}")
    if etype == "rating" and rating is None:
        raise EntryError("a rating event needs a rating")
    return rec
