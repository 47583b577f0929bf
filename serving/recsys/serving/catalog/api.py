"""``POST /v1/items``: add items to the live catalog without retraining (an APIRouter the app includes).

The body is validated (:class:`~recsys.serving.catalog.feed.ItemsIn`; a bad field -> 422 naming it),
appended to the Redis catalog feed so every replica picks the items up within ``catalog_poll_s``,
and applied to this replica at once, so the answer means "retrievable now": ``/v1/items/{id}/similar``
and the content candidate source find the items on the next request.

Writes need the API key like every write endpoint: the route declares ``require_api_key`` and the
router's route class checks it before the body is parsed (auth.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import JSONResponse

from recsys.serving.catalog.feed import ItemsAccepted, ItemsIn, items_frame
from recsys.serving.http.auth import KeyCheckedRoute
from recsys.serving.http.schemas import ErrorResponse

log = logging.getLogger(__name__)


def create_catalog_router(service: Any, key: list[Depends]) -> APIRouter:
    """The catalog write routes over a :class:`~recsys.serving.pipeline.service.RecommendationService`.

    ``key``: the API-key dependency list of the app (``[Depends(require_api_key)]``).
    """
    router = APIRouter(route_class=KeyCheckedRoute)

    @router.post("/v1/items", response_model=ItemsAccepted, status_code=201, dependencies=key,
                 responses={400: {"model": ErrorResponse, "description": "Body is not valid JSON"},
                            401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                            422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
    async def post_items(body: ItemsIn) -> Any:
        """Add or replace catalog items (title, genres, description, year, created_at, available)."""
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
