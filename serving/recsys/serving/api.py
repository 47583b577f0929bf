"""The HTTP API (FastAPI) over a :class:`RecommendationService`.

Built by a factory so the same app runs inside the Serve ingress replica
(``__serve_build_asgi_app__``) and in-process under a test client. Errors a client can fix are
4xx JSON naming the field (FastAPI's 422 shape: ``{"detail": [{"loc": [...], "msg", "type"}]}``);
dependency outages are 503 or a degraded 200, never a 500.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.serving.auth import ApiKeyGuard, ApiKeyMiddleware, load_api_keys
from recsys.serving.catalog_api import create_catalog_router
from recsys.serving.feature_client import EventIngestionUnavailable, EventValidationError, FeatureStoreUnavailable
from recsys.serving.observability import AccessLogMiddleware
from recsys.serving.request_limits import BodySizeLimitMiddleware
from recsys.serving.schemas import (
    INT64_MAX,
    INT64_MIN,
    ErrorResponse,
    EventAccepted,
    EventIn,
    Health,
    Readiness,
    RecommendationRequest,
    RecommendationResponse,
    ReloadResponse,
    SimilarItemsResponse,
)
from recsys.serving.service import NotReadyError, RecommendationService, RequestLimitError, UnknownItemError

log = logging.getLogger(__name__)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retrieval_version: str | None = Field(None, description="Version to switch to; None = promoted")
    ranking_version: str | None = Field(None, description="Version to switch to; None = promoted")


def _field_error(field: str, msg: str, status: int = 422, where: str = "body") -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"detail": [{"loc": [where, field], "msg": msg, "type": "value_error"}]})


def _request_id(request: Request) -> str:
    """Set by AccessLogMiddleware (client's X-Request-ID or a fresh one)."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def create_api(service: RecommendationService) -> FastAPI:
    app = FastAPI(
        title="recsys serving",
        version="1.0",
        description="Two-stage recommendations: sharded FAISS retrieval -> ranking -> re-ranking.",
    )
    errors: dict[int | str, dict[str, Any]] = {
        422: {"model": ErrorResponse, "description": "Invalid request; detail names the field"},
        503: {"model": ErrorResponse, "description": "Models loading or dependency down"},
    }

    @app.exception_handler(RequestLimitError)
    async def _limit(_: Request, exc: RequestLimitError) -> JSONResponse:
        return _field_error(exc.field, str(exc))

    @app.exception_handler(NotReadyError)
    async def _not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own shape, minus the echoed input (bounded response size for giant bodies)
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()[:20]]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # e.g. FastAPI's 400 "error parsing the body": say which part, in the one error shape
        if exc.status_code == 400 and isinstance(exc.detail, str):
            return JSONResponse(status_code=400,
                                content={"detail": [{"loc": ["body"], "msg": exc.detail, "type": "body_invalid"}]})
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail},
                            headers=getattr(exc, "headers", None))

    # outermost last: access log (request id, metrics, JSON line) -> API key -> body size -> app
    sec = service.cfg.security
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=service.cfg.limits.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, guard=ApiKeyGuard(load_api_keys(sec), tuple(sec.protected_prefixes)))
    app.add_middleware(AccessLogMiddleware, metrics=service.metrics)

    @app.post("/v1/recommendations", response_model=RecommendationResponse, responses=errors)
    async def recommend(request: Request, body: RecommendationRequest) -> RecommendationResponse:
        """Top-N items for a user (cold-start users included), with model versions and degradation flags."""
        return await service.recommend(body, request_id=_request_id(request))

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarItemsResponse,
             responses={**errors, 404: {"model": ErrorResponse, "description": "Unknown item"}})
    async def similar(
        item_id: int = Path(..., ge=INT64_MIN, le=INT64_MAX),
        n: int = Query(10, ge=1, description="Number of similar items (<= limits.max_similar_n)"),
    ) -> Any:
        """Items closest to ``item_id`` in the retrieval embedding space, plus item-kNN neighbours."""
        try:
            return await service.similar(item_id, n)
        except RequestLimitError as e:
            return _field_error(e.field, str(e), where="query")
        except UnknownItemError:
            return JSONResponse(status_code=404, content={"detail": f"item {item_id} not found"})

    @app.post("/v1/events", response_model=EventAccepted, status_code=202,
              responses={**errors, 400: {"model": ErrorResponse}})
    async def events(event: EventIn) -> Any:
        """Forward an interaction to the feature store's ingestion (and the experiment outcome log)."""
        payload = event.model_dump(mode="json", exclude_none=True)
        import asyncio

        failure: JSONResponse | None = None
        result = None
        try:
            result = await asyncio.to_thread(service.features.ingest, payload)
        except EventIngestionUnavailable as e:
            failure = JSONResponse(status_code=503, content={"detail": str(e)})
        except FeatureStoreUnavailable as e:
            failure = JSONResponse(status_code=503, content={"detail": f"feature store unavailable: {e}"})
        except Exception as e:  # noqa: BLE001 - an ingestion bug is an outage to the client, not a 500
            if EventValidationError is not None and isinstance(e, EventValidationError):
                return _field_error(str(getattr(e, "field", "event")), str(e))
            log.warning("event ingestion failed: %s: %s", type(e).__name__, e)
            failure = JSONResponse(status_code=503, content={"detail": f"event ingestion failed: {type(e).__name__}"})
        # invalidate after the ingest attempt, never before (a request in between could re-cache old features)
        await asyncio.to_thread(service.invalidate_user, event.user_id)
        service.record_event(payload)
        if failure is not None:
            return failure
        detail = None
        if result is not None:
            try:
                detail = json.dumps(getattr(result, "__dict__", None) or str(result), default=str)[:500]
            except (TypeError, ValueError):
                detail = None
        return EventAccepted(accepted=True, detail=detail)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz() -> Any:
        """Readiness: every stage has its models loaded."""
        body = Readiness(
            ready=service.ready,
            model_versions=service.active.as_dict() if service.active else {},
            feature_mode=getattr(service.features, "mode", "unknown"),
            experiments=service.experiments.enabled,
        )
        return body if service.ready else JSONResponse(status_code=503, content=body.model_dump())

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(content=service.metrics.render(), media_type=service.metrics.content_type)

    @app.post("/admin/reload", response_model=ReloadResponse, responses=errors)
    async def reload(body: ReloadRequest | None = Body(None)) -> Any:
        """Load the promoted (or given) versions everywhere, then switch atomically; old keeps serving on error."""
        body = body or ReloadRequest()
        try:
            return await service.reload(body.retrieval_version, body.ranking_version)
        except Exception as e:  # noqa: BLE001 - e.g. a corrupt artifact: report, keep serving the old one
            log.warning("reload failed: %s", e)
            return JSONResponse(status_code=409, content={"detail": f"reload failed, still serving "
                                                          f"{service.active.as_dict() if service.active else {}}: "
                                                          f"{e}"})

    app.include_router(create_catalog_router(service))  # POST /v1/items (issue 14)
    return app
