"""``POST /v1/items``: add items to the live catalog without retraining (an APIRouter the app includes).

The body is validated (:class:`~recsys.serving.catalog.feed.ItemsIn`; a bad field -> 422 naming it),
appended to the Redis catalog feed so every replica picks the items up within ``catalog_poll_s``,
and applied to this replica at once, so the answer means "retrievable now": ``/v1/items/{id}/similar``
and the content candidate source find the items on the next request.

Writes need the API key like every write endpoint (refused when none is configured, unless the
operator chose ``security.insecure``), whatever ``security.protected_prefixes`` says: the path shares
its prefix with the public ``GET /v1/items/{id}/similar``, so the key is checked here rather than by
the path-prefix middleware.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from recsys.serving.catalog.feed import ItemsAccepted, ItemsIn, items_frame
from recsys.serving.http.auth import ApiKeyGuard, _unauthorized, load_api_keys, presented_key
from recsys.serving.http.schemas import ErrorResponse

log = logging.getLogger(__name__)


def create_catalog_router(service: Any) -> APIRouter:
    """The catalog write routes over a :class:`~recsys.serving.pipeline.service.RecommendationService`."""
    router = APIRouter()
    sec = service.cfg.security
    guard = ApiKeyGuard(load_api_keys(sec), ("/v1/items",), insecure=sec.insecure)

    @router.post("/v1/items", response_model=ItemsAccepted, status_code=201,
                 responses={400: {"model": ErrorResponse, "description": "Body is not valid JSON"},
                            401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                            422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
    async def post_items(request: Request, body: ItemsIn) -> Any:
        """Add or replace catalog items (title, genres, description, year, created_at, available)."""
        if guard.enabled:
            key = presented_key(list(request.scope.get("headers") or []))
            if not guard.accepts(key):
                body, headers = _unauthorized(missing=key is None, configured=guard.configured)
                return Response(content=body, status_code=401,
                                headers={k.decode(): v.decode() for k, v in headers if k != b"content-length"})
        live = service.live
        if live.content is None:
            return JSONResponse(status_code=503, content={"detail": "content index not built: serving has no "
                                                                    "catalog_path (or it is still starting)"})
        if live.feed is not None:
            try:
                await asyncio.to_thread(live.feed.publish, body.items)
            except Exception as e:  # noqa: BLE001 - not durable/replicated without Redis: refuse, never 500
                log.warning("catalog feed publish failed: %s", e)
                return JSONResponse(status_code=503, content={"detail": f"catalog feed unavailable: "
                                                                        f"{type(e).__name__}"})
        await live.apply(items_frame(body.items), service.explorer)
        return ItemsAccepted(accepted=len(body.items), item_ids=[it.item_id for it in body.items],
                             content_indexed=True)

    return router
