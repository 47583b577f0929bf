"""API-key auth for the write endpoints (every POST/PUT/PATCH/DELETE and ``/admin/*``): closed by default.

Route-level, not path-level: each write route declares ``Depends(require_api_key)`` and the app's
route class (:class:`KeyCheckedRoute`) runs that check before FastAPI reads or parses the body, so
a request without a key gets 401 whatever the body holds and whatever ``root_path`` the app is mounted
under (a path-prefix match failed open under ``root_path="/"``, issue 22).
``tests/hardening/test_route_auth.py`` enumerates the app's routes, so a new write route without the
dependency fails CI.

``POST /v1/recommendations`` writes too (an exposure log line, bandit state): it stays open by default
(it is the product's read path), ``security.recommendations_need_key`` closes it, and
``security.recommendations_per_client_per_s`` rate-limits it per client (the key, else the peer address).

Keys never travel through the Serve config (which Ray shows in its dashboard and logs): the config
names *where* they are — an environment variable (the Helm chart maps its optional Secret to
``RECSYS_API_KEY``) and/or a file (a Secret mounted as a volume) — and the ingress replica reads
them once at start-up. Several comma/newline-separated keys are accepted, so a key can be rotated
without downtime. No key configured = the write endpoints answer 401 ("no API key is configured on
this server") unless the operator explicitly opted out with ``security.insecure`` (``recsys serve start
--insecure``, Helm ``serving.security.insecure``), which the server logs as a warning at start-up.
Reads stay open either way.

A client sends ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Missing or wrong ->
401 JSON ``{"detail": [{"loc": ["header", "x-api-key"], ...}]}``; comparisons are constant-time and
the key is never logged or echoed.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from recsys.serving.http.rate_limit import ClientRateLimiter

log = logging.getLogger(__name__)


class SecurityConfig(BaseModel):
    """Where API keys come from and what they guard (``ServingConfig.security``)."""

    model_config = ConfigDict(extra="forbid")

    api_key_env: str = Field("RECSYS_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="Env var holding the key(s); the Helm chart's apiKey Secret sets it")
    api_key_file: Path | None = Field(None, description="File holding the key(s), e.g. a mounted Secret")
    protected_prefixes: tuple[str, ...] = Field((), description="Deprecated, ignored: write routes declare "
                                                               "the key dependency themselves (auth.py)")
    recommendations_need_key: bool = Field(False, description="POST /v1/recommendations needs the key too "
                                                              "(it writes exposure logs and bandit state)")
    recommendations_per_client_per_s: float = Field(0.0, ge=0.0, description="Per-client rate limit of POST "
                                                    "/v1/recommendations per replica (0 = off); 429 + Retry-After")
    recommendations_burst: int = Field(20, ge=1, description="Token-bucket burst of that rate limit")
    insecure: bool = Field(False, description="Explicit opt-out: with no key configured, leave the write "
                                              "endpoints open (local experiments only)")


def load_api_keys(cfg: SecurityConfig, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Read the configured keys (env var and/or file); empty set = auth disabled."""
    env = os.environ if environ is None else environ
    raw = [env.get(cfg.api_key_env, "")]
    if cfg.api_key_file is not None:
        try:
            raw.append(Path(cfg.api_key_file).read_text())
        except OSError as e:
            # A configured-but-unreadable key file must not silently open the write endpoints.
            raise RuntimeError(f"api_key_file {cfg.api_key_file} is not readable: {e.strerror}") from e
    keys = {k.strip() for chunk in raw for k in chunk.replace("\n", ",").split(",")}
    return frozenset(k for k in keys if k)


class ApiKeyGuard:
    """Constant-time check of a presented key against the configured set."""

    def __init__(self, keys: frozenset[str], insecure: bool = False, recommendations_need_key: bool = False):
        self._keys = tuple(k.encode() for k in keys)
        self.insecure = insecure
        self.recommendations_need_key = recommendations_need_key
        if not self._keys and insecure:
            log.warning("no API key configured and security.insecure is set: the write endpoints are OPEN")

    @property
    def enabled(self) -> bool:
        """Protected paths need a key: always, unless no key is configured and insecure was chosen."""
        return bool(self._keys) or not self.insecure

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def accepts(self, presented: bytes | None) -> bool:
        if not presented:
            return False
        ok = False
        for key in self._keys:  # no early exit: timing does not reveal which key matched
            ok |= hmac.compare_digest(presented, key)
        return ok


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        lname = name.lower()
        if lname == b"x-api-key":
            return value.strip()
        if lname == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


def unauthorized(missing: bool, configured: bool = True) -> HTTPException:
    """The 401 (FastAPI's error shape, naming the header); the app's HTTPException handler renders it."""
    if not configured:
        msg = ("API key required, and no API key is configured on this server: the operator sets one "
               "(RECSYS_API_KEY / security.api_key_file) or starts it with --insecure")
    else:
        msg = "API key required for this endpoint" if missing else "API key is not valid"
    return HTTPException(status_code=401, detail=[{"loc": ["header", "x-api-key"], "msg": msg, "type": "unauthorized"}],
                         headers={"WWW-Authenticate": 'Bearer realm="recsys"'})


GUARD_STATE = "api_key_guard"
LIMITER_STATE = "recommendations_limiter"


def install_auth(app: Any, cfg: SecurityConfig) -> None:
    """Put the guard (and the optional recommendations rate limiter) where the dependencies find them."""
    guard = ApiKeyGuard(load_api_keys(cfg), insecure=cfg.insecure,
                        recommendations_need_key=cfg.recommendations_need_key)
    setattr(app.state, GUARD_STATE, guard)
    limiter = None
    if cfg.recommendations_per_client_per_s > 0:
        limiter = ClientRateLimiter(cfg.recommendations_per_client_per_s, cfg.recommendations_burst)
    setattr(app.state, LIMITER_STATE, limiter)


def _check_key(request: Request) -> bytes | None:
    guard: ApiKeyGuard | None = getattr(request.app.state, GUARD_STATE, None)
    key = presented_key(request.scope.get("headers") or [])
    if guard is None:  # an app built without install_auth: closed, never open by omission
        raise unauthorized(missing=key is None, configured=False)
    if guard.enabled and not guard.accepts(key):
        raise unauthorized(missing=key is None, configured=guard.configured)
    return key


def _first_time(request: Request, check: str) -> bool:
    """Each check runs once per request (KeyCheckedRoute runs it early, FastAPI's solver again)."""
    done = request.scope.setdefault("recsys.checks_done", set())
    if check in done:
        return False
    done.add(check)
    return True


async def require_api_key(request: Request) -> None:
    """Dependency of every write/admin route: 401 unless a configured key is presented."""
    if _first_time(request, "api_key"):
        _check_key(request)


async def recommendations_gate(request: Request) -> None:
    """Dependency of ``POST /v1/recommendations``: the optional key, then the optional per-client limit."""
    if not _first_time(request, "recommendations"):
        return
    guard: ApiKeyGuard | None = getattr(request.app.state, GUARD_STATE, None)
    if guard is None or guard.recommendations_need_key:
        key = _check_key(request)
    else:
        key = presented_key(request.scope.get("headers") or [])
    limiter: ClientRateLimiter | None = getattr(request.app.state, LIMITER_STATE, None)
    if limiter is not None:
        client = key or (request.client.host if request.client else "unknown").encode()
        wait_s = limiter.acquire(client)
        if wait_s > 0:
            raise HTTPException(status_code=429, detail=[{"loc": ["header", "x-api-key"], "type": "rate_limited",
                                                          "msg": "too many recommendation requests from this "
                                                                 "client; retry after Retry-After seconds"}],
                                headers={"Retry-After": str(max(1, int(wait_s + 0.999)))})


PRE_BODY_CHECKS = (require_api_key, recommendations_gate)


class KeyCheckedRoute(APIRoute):
    """A route whose auth dependencies run before FastAPI reads or parses the body.

    FastAPI reads and JSON-decodes the body before it solves dependencies, so a plain dependency
    would answer a malformed body with 422 before the 401. The dependency stays declared (OpenAPI,
    the route-enumerating test, and a second check should this class ever be bypassed).
    """

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()
        checks = [d.call for d in self.dependant.dependencies if d.call in PRE_BODY_CHECKS]
        if not checks:
            return handler

        async def checked(request: Request) -> Any:
            for check in checks:
                await check(request)
            return await handler(request)

        return checked
