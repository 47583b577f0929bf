"""The dead-letter stream: stream entries the consumer could not apply, kept with their error.

An entry lands here when it can never be applied (checked on read: not JSON, an unknown ``event_type``,
ids out of range) or when applying it failed ``max_deliveries`` times (XPENDING delivery count). Moving
it acknowledges it in the same atomic step, so an entry is either pending or here: never lost, and
never able to stop the consumer. The dead-letter stream is capped (``dead_letter_max_len``, oldest
dropped) so a flood of bad entries cannot fill Redis.

Operators inspect and act with ``recsys features dlq list|show|replay|drop``: ``replay`` re-appends the
original payload to the event stream (after a fix, or once every consumer knows a new event type) and
deletes the dead letter in the same step; ``drop`` deletes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from recsys.features.config import FeatureStoreConfig
from recsys.features.keys import OverlayKeys
from recsys.features.stream_scripts import REPLAY_SCRIPT

ID_PATTERN = r"^\d+-\d+$"


def _s(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


@dataclass
class DeadLetter:
    id: str  # id in the dead-letter stream (its time is when the entry was dead-lettered)
    source_id: str  # id the entry had in the event stream
    payload: str  # the entry's raw ``e`` field, as written
    error: str
    deliveries: int

    def as_dict(self) -> dict:
        return asdict(self)


class DeadLetters:
    """Read and act on one project's dead-letter stream."""

    def __init__(self, cfg: FeatureStoreConfig, client=None):
        from recsys.features.redis_clients import sync_client

        self.cfg = cfg
        self.keys = OverlayKeys(cfg.project)
        self.redis = client or sync_client(cfg, cfg.batch_timeout_s)
        self._replay = self.redis.register_script(REPLAY_SCRIPT)

    @staticmethod
    def _letter(entry_id, fields) -> DeadLetter:
        f = {_s(k): _s(v) for k, v in (fields or {}).items()}
        return DeadLetter(id=_s(entry_id), source_id=f.get("source_id", ""), payload=f.get("e", ""),
                          error=f.get("error", ""), deliveries=int(f.get("deliveries") or 0))

    def count(self) -> int:
        return int(self.redis.xlen(self.keys.dead_letters))

    def list(self, limit: int = 100, after: str = "-") -> list[DeadLetter]:
        """Oldest first, at most ``limit``, starting at id ``after`` (inclusive; '-' = the first)."""
        rows = self.redis.xrange(self.keys.dead_letters, min=after, max="+", count=limit)
        return [self._letter(i, f) for i, f in rows]

    def show(self, letter_id: str) -> DeadLetter | None:
        rows = self.redis.xrange(self.keys.dead_letters, min=letter_id, max=letter_id, count=1)
        return self._letter(*rows[0]) if rows else None

    def all_ids(self) -> list[str]:
        out: list[str] = []
        start = "-"
        while True:
            rows = self.redis.xrange(self.keys.dead_letters, min=start, max="+", count=1000)
            out += [_s(i) for i, _ in rows if _s(i) != start]
            if len(rows) < 1000:
                return out
            start = _s(rows[-1][0])

    def replay(self, letter_ids: Sequence[str]) -> dict[str, str | None]:
        """Re-append each letter's payload to the event stream and delete it (atomic per call).

        Returns {letter id: new stream id, or None when no such letter}."""
        out: dict[str, str | None] = {}
        for c in range(0, len(letter_ids), 500):
            chunk = list(letter_ids[c:c + 500])
            ids = self._replay(keys=[self.keys.stream, self.keys.dead_letters], args=chunk)
            out.update({lid: (_s(n) or None) for lid, n in zip(chunk, ids, strict=True)})
        return out

    def drop(self, letter_ids: Sequence[str]) -> int:
        """Delete the letters; returns how many existed."""
        if not letter_ids:
            return 0
        return int(self.redis.xdel(self.keys.dead_letters, *letter_ids))
