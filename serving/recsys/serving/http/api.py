"""The HTTP API (FastAPI) over a :class:`RecommendationService`.

Built by a factory so the same app runs inside the Serve ingress replica
(``__serve_build_asgi_app__``) and in-process under a test client. Errors a client can fix are
4xx JSON naming the field (FastAPI's 422 shape: ``{"detail": [{"loc": [...], "msg", "type"}]}``);
dependency outages are 503 or a degraded 200, never a 500.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.serving.catalog.api import create_catalog_router
from recsys.serving.http.auth import KeyCheckedRoute, install_auth, recommendations_gate, require_api_key
from recsys.serving.http.events import EventPipeline, EventsNotConfigured
from recsys.serving.http.observability import AccessLogMiddleware
from recsys.serving.http.request_limits import BodySizeLimitMiddleware
from recsys.serving.http.schemas import (
    INT64_MAX,
    INT64_MIN,
    MAX_EVENTS_PER_CALL,
    ErrorResponse,
    EventAccepted,
    EventBatch,
    EventIn,
    Health,
    Readiness,
    RecommendationRequest,
    RecommendationResponse,
    ReloadResponse,
    SimilarItemsResponse,
)
from recsys.serving.pipeline.features.client import EventValidationError, FeatureStoreUnavailable
from recsys.serving.pipeline.service import NotReadyError, RecommendationService, RequestLimitError, UnknownItemError

log = logging.getLogger(__name__)


RETRY_AFTER_S = 1
"""Retry-After of a 503 from /v1/events: the event log (Redis) was not writable; nothing was accepted."""


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    retrieval_version: str | None = Field(None, description="Version to switch to; None = promoted")
    ranking_version: str | None = Field(None, description="Version to switch to; None = promoted")


KEY = [Depends(require_api_key)]
"""The dependency list of every write/admin route (auth.py; tests/hardening/test_route_auth.py enforces it)."""


def _field_error(field: str, msg: str, status: int = 422, where: str = "body") -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"detail": [{"loc": [where, field], "msg": msg, "type": "value_error"}]})


def _request_id(request: Request) -> str:
    """Set by AccessLogMiddleware (client's X-Request-ID or a fresh one)."""
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def _unavailable(msg: str) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": msg}, headers={"Retry-After": str(RETRY_AFTER_S)})


def create_api(service: RecommendationService) -> FastAPI:
    """The app: error shapes, middleware, then the routes by concern (events start this replica's consumer)."""
    events_pipeline = EventPipeline(service)
    events_pipeline.start()
    events_pipeline.register_metrics(service.metrics.registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await events_pipeline.aclose()
        await service.aclose()  # tasks, threads, Redis clients: a replaced replica leaves no fds behind

    app = FastAPI(
        title="recsys serving",
        version="1.0",
        description="Two-stage recommendations: sharded FAISS retrieval -> ranking -> re-ranking.",
        lifespan=lifespan,
    )
    app.router.route_class = KeyCheckedRoute  # auth dependencies run before the body is read (auth.py)
    install_auth(app, service.cfg.security)
    app.state.events = events_pipeline
    lim = service.cfg.limits
    err = {"model": ErrorResponse}
    errors: dict[int | str, dict[str, Any]] = {
        400: {**err, "description": "Body is not valid JSON"},
        413: {**err, "description": f"Body larger than {lim.max_body_bytes} bytes"},
        422: {**err, "description": "Invalid request; detail names the field"},
        503: {**err, "description": "Models loading or dependency down"},
    }
    protected: dict[int | str, dict[str, Any]] = {
        401: {**err, "description": "API key missing or wrong (header X-API-Key or Authorization: Bearer)"},
    }
    _add_error_handlers(app)
    _add_middleware(app, service)
    _add_recommendation_routes(app, service, errors)
    _add_event_routes(app, service, events_pipeline, {**errors, **protected})
    _add_operations_routes(app, service, errors, protected)
    app.include_router(create_catalog_router(service, KEY))  # POST /v1/items (issue 14)
    _publish_limits(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every client-fixable error in one JSON shape naming the field; no 500 for bad input."""

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


def _add_middleware(app: FastAPI, service: RecommendationService) -> None:
    # outermost last: access log (request id, metrics, JSON line) -> body size -> app (-> route-level API key)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=service.cfg.limits.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, metrics=service.metrics, sample=service.cfg.access_log_sample)


def _add_recommendation_routes(app: FastAPI, service: RecommendationService,
                               errors: dict[int | str, dict[str, Any]]) -> None:
    lim = service.cfg.limits
    limited = {401: {"model": ErrorResponse, "description": "API key missing (security.recommendations_need_key)"},
               429: {"model": ErrorResponse, "description": "Per-client rate limit (if configured)"}}

    @app.post("/v1/recommendations", response_model=RecommendationResponse,
              dependencies=[Depends(recommendations_gate)], responses={**errors, **limited})
    async def recommend(request: Request, body: RecommendationRequest) -> RecommendationResponse:
        """Top-N items for a user (cold-start users included), with model versions and degradation flags."""
        return await service.recommend(body, request_id=_request_id(request))

    @app.get("/v1/items/{item_id}/similar", response_model=SimilarItemsResponse,
             responses={**errors, 404: {"model": ErrorResponse, "description": "Unknown item"}})
    async def similar(
        item_id: int = Path(..., ge=INT64_MIN, le=INT64_MAX),
        n: int = Query(10, ge=1, le=lim.max_similar_n, description="Number of similar items"),
    ) -> Any:
        """Items closest to ``item_id`` in the retrieval embedding space, plus item-kNN neighbours."""
        try:
            return await service.similar(item_id, n)
        except RequestLimitError as e:
            return _field_error(e.field, str(e), where="query")
        except UnknownItemError:
            return JSONResponse(status_code=404, content={"detail": f"item {item_id} not found"})


def _add_event_routes(app: FastAPI, service: RecommendationService, events_pipeline: EventPipeline,
                      responses: dict[int | str, dict[str, Any]]) -> None:
    events_doc = (f"Record interactions: one event object, or a list of up to {MAX_EVENTS_PER_CALL} (all validate "
                  "or none is accepted). 202 means the events are in the durable event log; the user's online "
                  "features and cached answers follow within about a second. Users and items never seen before "
                  "are welcome. 503 + Retry-After: the log could not be written and nothing was accepted.")

    @app.post("/v1/events", response_model=EventAccepted, status_code=202, description=events_doc,
              dependencies=KEY, responses=responses)
    async def events(body: Annotated[EventIn | EventBatch, Body()]) -> Any:
        """Append events to the durable log (202), or 503 + Retry-After when it cannot be written."""
        batch = body.root if isinstance(body, EventBatch) else [body]
        payloads = [e.model_dump(mode="json", exclude_none=True) for e in batch]
        try:
            result = await events_pipeline.accept(payloads)
        except EventsNotConfigured:
            return _unavailable("event ingestion is not configured on this server")
        except FeatureStoreUnavailable as e:  # the cause, not the address: full stream / full Redis / down
            why = ("stream full, consumers behind" if type(e).__name__ == "EventLogFull"
                   else "store out of memory" if "out of memory" in str(e) else "store unreachable")
            return _unavailable(f"event log unavailable ({why}); nothing was accepted, retry")
        except Exception as e:  # noqa: BLE001 - validation -> 422; anything else is an outage, never a 500
            if EventValidationError is not None and isinstance(e, EventValidationError):
                index = getattr(e, "index", None)
                loc = ["body", *([index] if index is not None else []), str(getattr(e, "field", "event"))]
                return JSONResponse(status_code=422, content={"detail": [
                    {"loc": loc, "msg": str(e), "type": "value_error"}]})
            log.warning("event ingestion failed: %s", type(e).__name__)
            return _unavailable("event ingestion failed; nothing was accepted, retry")
        # Only now is the event accepted: exploration posteriors and the experiment outcome log
        # (the outcome carries the event id, so a client retry of the same event is not a second outcome).
        for rec in result.records:
            service.record_event(rec)
        return EventAccepted(accepted=len(result.event_ids), event_ids=result.event_ids)


def _add_operations_routes(app: FastAPI, service: RecommendationService,
                           errors: dict[int | str, dict[str, Any]], protected: dict[int | str, dict[str, Any]]) -> None:
    err = {"model": ErrorResponse}

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

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=KEY,
              responses={**errors, **protected,
                         409: {**err, "description": "Reload refused; the old versions keep serving"}})
    async def reload(body: ReloadRequest | None = Body(None)) -> Any:
        """Load the promoted (or given) versions everywhere, then switch atomically; old keeps serving on error."""
        body = body or ReloadRequest()
        try:
            return await service.reload(body.retrieval_version, body.ranking_version)
        except Exception as e:  # noqa: BLE001 - e.g. a corrupt artifact: report, keep serving the old one
            log.warning("reload failed: %s", e)  # the message may name store paths: server log only
            serving = service.active.as_dict() if service.active else {}
            return JSONResponse(status_code=409, content={
                "detail": f"reload failed ({type(e).__name__}); still serving {serving}; see the server log"})


def _integer_bounds(node: Any) -> None:
    """Integer fields get integer bounds (pydantic's strict mode emits floats, and 9.223372036854776e18
    is 2**63, one past int64: a client trusting it would send ids the server refuses)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key, edge in (("minimum", INT64_MIN), ("maximum", INT64_MAX)):
                v = node.get(key)
                if isinstance(v, float):
                    node[key] = edge if abs(v) >= 2.0**62 else int(v)
        for v in node.values():
            _integer_bounds(v)
    elif isinstance(node, list):
        for v in node:
            _integer_bounds(v)


def _publish_limits(app: FastAPI, service: RecommendationService) -> None:
    """Put the configured request limits into the OpenAPI schema, so it promises exactly what is served."""
    lim = service.cfg.limits
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI after the first call; the edits below are idempotent
        props = schema.get("components", {}).get("schemas", {}).get("RecommendationRequest", {}).get("properties", {})
        if "n" in props:
            props["n"]["maximum"] = lim.max_n
        if "exclude" in props:
            props["exclude"]["maxItems"] = lim.max_exclude
        for variant in props.get("history", {}).get("anyOf", []):
            if variant.get("type") == "array":
                variant["maxItems"] = lim.max_history
        if "context" in props:
            props["context"]["maxProperties"] = lim.max_context_keys
        _integer_bounds(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
