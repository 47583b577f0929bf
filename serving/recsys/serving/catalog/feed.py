"""New catalog items between trainings: the posted-item schema, a Redis stream shared by all replicas,
and the overlays that add posted items to the in-memory catalog and display metadata.

Why a stream: ``POST /v1/items`` reaches one ingress replica, but every replica must learn the item
within seconds. The receiving replica appends the item to the Redis stream ``recsys:catalog:items``
(``XADD``) and applies it at once; every replica polls the stream (``XREAD`` from its last id) every
``catalog_poll_s`` and applies what it has not seen. A restarted replica replays the stream from the
start of the stream *after the catalog file was written* (stream ids are millisecond timestamps), so
posted items survive restarts until the next export of the catalog contains them.
Applying an item twice is harmless: the content index replaces it in place.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints

from recsys.serving.catalog.metadata import ItemMetadata
from recsys.serving.http.schemas import INT64_MAX, _integral_number, rfc3339_pattern
from recsys.serving.models.artifacts import Catalog, IdIndex

STREAM_KEY = "recsys:catalog:items"

# 1-64 characters, no '|' (the catalog's genre separator), not only whitespace: in the OpenAPI schema too
# strict ints (no booleans, no strings), the schema's own date-time pattern with years 1800-2199
StrictId = Annotated[int, Field(ge=0, le=INT64_MAX, strict=True), BeforeValidator(_integral_number)]
StrictYear = Annotated[int, Field(ge=1800, le=2200, strict=True), BeforeValidator(_integral_number)]
CREATED_PATTERN = rfc3339_pattern(r"(1[89][0-9]{2}|2[01][0-9]{2})",  # 1800-2199; 1800, 1900, 2100 not leap
                                  r"(1[89]|2[01])(0[48]|[2468][048]|[13579][26])|2000")
Genre = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^|]*[^|\s][^|]*$")]


class ItemIn(BaseModel):
    """One catalog item as posted to ``POST /v1/items`` or imported with ``recsys catalog import-items``."""

    model_config = ConfigDict(extra="forbid")

    item_id: StrictId = Field(..., description="Non-negative (FAISS reserves -1)")
    title: str = Field(..., min_length=1, max_length=500)
    genres: list[Genre] = Field(default_factory=list, max_length=32, description="Genre names")
    description: str = Field("", max_length=5_000)
    year: StrictYear | None = None
    created_at: str | None = Field(None, pattern=CREATED_PATTERN,
                                   description="RFC 3339 date-time, years 1800-2199; default: now (UTC)")
    available: StrictBool = True


class ItemsIn(BaseModel):
    """Body of ``POST /v1/items``: a batch of items (limits keep one request cheap)."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn] = Field(..., min_length=1, max_length=100)


class ItemsAccepted(BaseModel):
    accepted: int
    item_ids: list[int]
    content_indexed: bool = Field(description="False when the content index is not built (no catalog configured)")


def items_frame(items: list[ItemIn]) -> pd.DataFrame:
    """Posted items as a frame in the dataset's item schema (genres '|'-joined, created_at UTC)."""
    now = pd.Timestamp(datetime.now(tz=UTC))
    rows = []
    for it in items:
        created = now if it.created_at is None else pd.Timestamp(it.created_at).tz_convert("UTC")
        rows.append({"item_id": it.item_id, "title": it.title, "genres": "|".join(g.strip() for g in it.genres),
                     "description": it.description, "year": it.year, "created_at": created,
                     "available": it.available})
    return pd.DataFrame(rows, columns=["item_id", "title", "genres", "description", "year", "created_at",
                                       "available"])


class CatalogFeed:
    """The Redis stream of posted items: ``publish`` (XADD) and ``read`` (XREAD from a stream id)."""

    def __init__(self, redis_url: str, key: str = STREAM_KEY, maxlen: int = 1_000_000, timeout_s: float = 1.0):
        import redis

        self.key = key
        self.maxlen = maxlen
        self._r = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        # reads run in worker threads (asyncio.to_thread); cancelling the poll task does not stop one already
        # started, and a read that checked out a connection after close() would open a socket nobody closes
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the client; waits for a read or publish in flight, and later calls raise ``ConnectionError``."""
        with self._lock:
            self._closed = True
            self._r.close()

    def _client(self) -> Any:
        if self._closed:
            raise ConnectionError("catalog feed is closed")
        return self._r

    def publish(self, items: list[ItemIn]) -> list[str]:
        """Append items (one stream entry each, in one round trip); returns their stream ids."""
        with self._lock:
            pipe = self._client().pipeline(transaction=False)
            for it in items:
                pipe.xadd(self.key, {"item": it.model_dump_json()}, maxlen=self.maxlen, approximate=True)
            ids = pipe.execute()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def read(self, after: str = "0-0", count: int = 1000) -> tuple[str, list[ItemIn]]:
        """Items appended after stream id ``after`` (at most ``count``) and the last id read."""
        out: list[ItemIn] = []
        last = after
        with self._lock:
            resp = self._client().xread({self.key: after}, count=count)
        for _, entries in resp or []:
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                raw = fields.get(b"item") or fields.get("item")
                try:
                    out.append(ItemIn.model_validate(json.loads(raw)))
                except (TypeError, ValueError):
                    continue  # a hand-written bad entry must not stop every replica's feed
        return last, out

    def clear(self) -> None:
        """Drop the stream (after the catalog export that contains its items; tests)."""
        with self._lock:
            self._client().delete(self.key)


# ---------------------------------------------------------------------- in-memory overlays
def extend_catalog(catalog: Catalog, items: pd.DataFrame) -> Catalog:
    """A new :class:`Catalog` with ``items`` added (an id already present is replaced)."""
    add = Catalog.from_items(items.drop_duplicates("item_id", keep="last"))
    if len(catalog.index) == 0:
        return add
    keep = ~np.isin(catalog.index.ids, add.index.ids)
    ids = np.concatenate([catalog.index.ids[keep], add.index.ids])
    genres = [g for g, k in zip(catalog.genres, keep, strict=True) if k] + list(add.genres)
    created = np.concatenate([catalog.created_at_s[keep], add.created_at_s])
    available = np.concatenate([catalog.available[keep], add.available])
    return Catalog(IdIndex(ids), genres, created, available)


def extend_metadata(meta: ItemMetadata, items: pd.DataFrame) -> ItemMetadata:
    """A new :class:`ItemMetadata` with the titles/genres of ``items`` added (replacing same ids)."""
    items = items.drop_duplicates("item_id", keep="last")
    add_ids = items["item_id"].to_numpy(np.int64)
    keep = ~np.isin(meta.index.ids, add_ids)
    titles = np.concatenate([meta.titles[keep], np.asarray(items["title"].astype(str).tolist(), object)])
    genres = [g for g, k in zip(meta.genres, keep, strict=True) if k] + [
        sorted(x for x in str(g).split("|") if x) for g in items["genres"]]
    return ItemMetadata(np.concatenate([meta.index.ids[keep], add_ids]), titles, genres)


def replace_catalog_contents(target: Catalog, new: Catalog) -> None:
    """Make ``target`` hold ``new``'s rows, in place: every stage keeps its reference to the one Catalog.

    Four attribute writes with no await in between: atomic for requests on the event loop.
    """
    target.index, target.genres, target.created_at_s, target.available = (new.index, new.genres, new.created_at_s,
                                                                           new.available)


def catalog_stream_id(path) -> str:
    """The feed position matching the catalog file's write time: entries before it are in the export."""
    from pathlib import Path

    if path is None:
        return "0-0"
    p = Path(path)
    if p.is_dir():
        p = p / "items.parquet"
    return f"{int(p.stat().st_mtime * 1000)}-0" if p.exists() else "0-0"


class LiveCatalog:
    """The catalog one ingress replica serves, growing with posted items between trainings.

    Holds the content index (built from the catalog at start), the Redis feed and the in-memory
    overlays. ``apply`` adds items everywhere they matter: content index (so ``/similar`` and the
    content candidate source find them), the shared :class:`Catalog` (filters, genres, freshness),
    display metadata, and the exploration pool of new items.
    """

    def __init__(self, catalog: Catalog, meta: ItemMetadata, redis_url: str, *, content_dim: int = 64,
                 poll_s: float = 1.0, enabled: bool = True):
        self.catalog = catalog
        self.meta = meta
        self.redis_url = redis_url
        self.content_dim = content_dim
        self.poll_s = poll_s
        self.enabled = enabled
        self.content: Any = None  # ContentIndex once built
        self.feed: CatalogFeed | None = None
        self.last_id = "0-0"
        self.applied = 0
        self._task: Any = None

    @property
    def version(self) -> str:
        """Changes whenever this replica's catalog does (feed position, items applied). The result cache's key
        holds it, so an answer computed before a posted item arrived is not replayed after it."""
        return f"{self.last_id}/{self.applied}"

    def build(self, items: pd.DataFrame | None) -> None:
        """Fit and fill the content index from the catalog frame (blocking; run in a thread)."""
        from recsys.serving.pipeline.candidates.content_index import ContentConfig, ContentIndex

        if not self.enabled or items is None or len(items) < 2:
            return
        self.content = ContentIndex.build(items, ContentConfig(dim=self.content_dim))
        try:
            self.feed = CatalogFeed(self.redis_url)
        except Exception as e:  # noqa: BLE001 - a bad Redis URL leaves the feed off, serving goes on
            import logging

            logging.getLogger(__name__).warning("catalog feed unavailable: %s", e)

    async def start(self, items: pd.DataFrame | None, explorer_of: Any, since_id: str = "0-0") -> None:
        """Build the index, replay the feed after ``since_id`` once, then poll it every ``poll_s``."""
        import asyncio

        self.last_id = since_id
        await asyncio.to_thread(self.build, items)
        if self.content is None or self.feed is None:
            return
        try:
            await self.poll_once(explorer_of())
        except Exception as e:  # noqa: BLE001 - Redis down at start: serve the exported catalog, retry later
            import logging

            logging.getLogger(__name__).warning("catalog feed replay failed, will retry: %s", e)
        if self.poll_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._poll_loop(explorer_of))

    async def _poll_loop(self, explorer_of: Any) -> None:
        import asyncio
        import logging

        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once(explorer_of())
            except Exception as e:  # noqa: BLE001 - Redis down: keep serving, try again next tick
                logging.getLogger(__name__).warning("catalog feed poll failed: %s", e)

    async def poll_once(self, explorer: Any) -> int:
        import asyncio

        if self.feed is None:
            return 0
        total = 0
        while True:
            last, items = await asyncio.to_thread(self.feed.read, self.last_id)
            if items:
                await self.apply(items_frame(items), explorer)
                total += len(items)
            self.last_id = last
            if len(items) < 1000:
                return total

    async def apply(self, frame: pd.DataFrame, explorer: Any) -> None:
        """Add ``frame``'s items to the content index, catalog, metadata and exploration pool."""
        import asyncio

        if self.content is not None:
            await asyncio.to_thread(self.content.add, frame)
        new_cat = await asyncio.to_thread(extend_catalog, self.catalog, frame)
        new_meta = await asyncio.to_thread(extend_metadata, self.meta, frame)
        replace_catalog_contents(self.catalog, new_cat)  # no await from here: atomic for the event loop
        self.meta = new_meta
        if explorer is not None:
            explorer.add_new_items(frame.loc[frame["available"].astype(bool), "item_id"].to_numpy(np.int64))
        self.applied += len(frame)

    def stop(self) -> None:
        """Cancel the poll task (it references the service) and close the feed's Redis client."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.feed is not None:
            self.feed.close()
