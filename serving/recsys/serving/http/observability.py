"""Per-request observability: request id, one structured JSON log line, request metrics.

:class:`AccessLogMiddleware` is a plain ASGI middleware (no ``BaseHTTPMiddleware`` task hop) that
wraps the whole FastAPI app. For every HTTP request it

* takes the request id from ``X-Request-ID`` (printable ASCII, <= 128 chars) or makes one, and
  returns it in the ``X-Request-ID`` response header (the Serve proxy does that itself when the
  client sent one);
* publishes a :class:`RequestContext` in a context variable, which the pipeline fills in (user,
  variant, per-stage timings, degraded reasons, cache outcome) without any parameter threading;
* after the response, records ``recsys_requests_total`` / ``recsys_request_latency_seconds`` and
  writes exactly one JSON line to the ``recsys.serving.access`` logger.

Only the fields of :class:`RequestContext` are ever logged: no headers, no bodies, so API keys and
other secrets cannot reach the logs by accident.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

ACCESS_LOGGER = "recsys.serving.access"
REQUEST_ID_HEADER = "X-Request-ID"
_RID_OK = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces: safe to echo and log


@dataclass
class RequestContext:
    """What one request did, filled in along the way; the access log line is built from it."""

    request_id: str
    method: str
    path: str
    endpoint: str = "unmatched"
    status: int = 0
    user_id: int | None = None
    experiment: str | None = None
    variant: str | None = None
    cache: str | None = None  # "hit" | "miss" | "bypass"
    timings: dict[str, float] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    items: int | None = None
    error: str | None = None

    def variant_label(self) -> str:
        if not self.experiment:
            return "none"
        return f"{self.experiment}:{self.variant or ''}"

    def log_record(self, latency_s: float) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "event": "request",
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "status": self.status,
            "latency_ms": round(latency_s * 1000, 3),
        }
        if self.user_id is not None:
            rec["user_id"] = self.user_id
        if self.experiment is not None or self.endpoint == "/v1/recommendations":
            rec["variant"] = self.variant_label()
        if self.cache is not None:
            rec["cache"] = self.cache
        if self.timings:
            rec["stages_ms"] = {k: round(v * 1000, 3) for k, v in self.timings.items()}
        if self.items is not None:
            rec["items"] = self.items
        if self.endpoint == "/v1/recommendations" or self.degraded:
            rec["degraded"] = bool(self.degraded)
            rec["degraded_reasons"] = list(self.degraded)
        if self.error:
            rec["error"] = self.error
        return rec


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("recsys_request", default=None)


def current_request() -> RequestContext | None:
    """The context of the request being served in this task (None outside a request)."""
    return _current.get()


def sanitize_request_id(raw: str | None) -> str:
    """The client's id when it is short and harmless (it is echoed and logged), else a fresh one."""
    if raw and _RID_OK.match(raw):
        return raw
    return uuid.uuid4().hex


class RequestMetrics(Protocol):
    def observe_request(self, ctx: RequestContext, latency_s: float) -> None: ...


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; a record's ``json`` extra is merged in verbatim."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        payload = getattr(record, "json", None)
        if isinstance(payload, dict):
            out.update(payload)
        else:
            out["msg"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, separators=(",", ":"), default=str)


def configure_access_log(enabled: bool = True, stream: Any = None) -> logging.Logger:
    """Give the access logger its own JSON handler (idempotent); Serve ships replica stderr to its logs."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.propagate = False  # keep Serve's text formatter from wrapping the JSON line
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    if not any(getattr(h, "_recsys_json", False) for h in logger.handlers):
        # sys.__stderr__, not sys.stderr: inside a Serve replica sys.stderr is Serve's StreamToLogger,
        # which re-logs every line with a stack walk to find the caller (~0.2 ms per request)
        handler = logging.StreamHandler(stream or sys.__stderr__ or sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        handler._recsys_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


class AccessLogMiddleware:
    """ASGI middleware: request id, request metrics and one JSON access-log line per HTTP request."""

    def __init__(self, app: Any, metrics: RequestMetrics | None = None, logger: logging.Logger | None = None,
                 skip_log_paths: tuple[str, ...] = ("/metrics", "/healthz", "/readyz"), sample: float = 1.0):
        self.app = app
        self.metrics = metrics
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.skip_log_paths = skip_log_paths
        self.sample = sample  # share of plain successes logged; errors and degraded answers always are

    def _should_log(self, ctx: RequestContext) -> bool:
        if self.sample >= 1.0 or ctx.status >= 400 or ctx.degraded or ctx.error:
            return True
        return random.random() < self.sample

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        client_rid = headers.get(b"x-request-id")
        rid = sanitize_request_id(client_rid.decode("latin-1") if client_rid else None)
        ctx = RequestContext(request_id=rid, method=scope.get("method", ""), path=scope.get("path", ""))
        root = scope.get("root_path", "")
        local_path = ctx.path[len(root):] if root and ctx.path.startswith(root) else ctx.path
        scope.setdefault("state", {})["request_id"] = rid
        token = _current.set(ctx)
        # The Serve proxy puts an id on every request and appends it to the response itself; add
        # ours only when the request came without one (plain uvicorn, in-process test clients).
        echo_ourselves = client_rid is None

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                ctx.status = int(message["status"])
                if echo_ourselves:
                    hdrs = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                    hdrs.append((b"x-request-id", rid.encode()))
                    message = {**message, "headers": hdrs}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as e:
            ctx.status = ctx.status or 500
            ctx.error = type(e).__name__
            raise
        finally:
            latency = time.perf_counter() - t0
            route = scope.get("route")
            ctx.endpoint = getattr(route, "path", None) or ctx.endpoint
            _current.reset(token)
            if self.metrics is not None:
                with contextlib.suppress(Exception):  # metrics must never fail a request
                    self.metrics.observe_request(ctx, latency)
            if (local_path not in self.skip_log_paths and self.logger.isEnabledFor(logging.INFO)
                    and self._should_log(ctx)):
                self.logger.info("request", extra={"json": ctx.log_record(latency)})
