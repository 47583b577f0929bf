"""API-key auth for the write endpoints (``/v1/events``, ``/admin/*``): closed by default.

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
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class SecurityConfig(BaseModel):
    """Where API keys come from and what they guard (``ServingConfig.security``)."""

    model_config = ConfigDict(extra="forbid")

    api_key_env: str = Field("RECSYS_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="Env var holding the key(s); the Helm chart's apiKey Secret sets it")
    api_key_file: Path | None = Field(None, description="File holding the key(s), e.g. a mounted Secret")
    protected_prefixes: tuple[str, ...] = Field(("/v1/events", "/admin/"),
                                                description="Path prefixes that need a key")
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

    def __init__(self, keys: frozenset[str], protected_prefixes: tuple[str, ...], insecure: bool = False):
        self._keys = tuple(k.encode() for k in keys)
        self.protected_prefixes = protected_prefixes
        self.insecure = insecure
        if not self._keys and insecure:
            log.warning("no API key configured and security.insecure is set: /v1/events and /admin/* are OPEN")

    @property
    def enabled(self) -> bool:
        """Protected paths need a key: always, unless no key is configured and insecure was chosen."""
        return bool(self._keys) or not self.insecure

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def protects(self, path: str) -> bool:
        return self.enabled and any(path == p.rstrip("/") or path.startswith(p) for p in self.protected_prefixes)

    def accepts(self, presented: bytes | None) -> bool:
        if not presented:
            return False
        ok = False
        for key in self._keys:  # no early exit: timing does not reveal which key matched
            ok |= hmac.compare_digest(presented, key)
        return ok


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        lname = name.lower()
        if lname == b"x-api-key":
            return value.strip()
        if lname == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


def _unauthorized(missing: bool, configured: bool = True) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    if not configured:
        msg = ("API key required, and no API key is configured on this server: the operator sets one "
               "(RECSYS_API_KEY / security.api_key_file) or starts it with --insecure")
    else:
        msg = "API key required for this endpoint" if missing else "API key is not valid"
    body = json.dumps({"detail": [{"loc": ["header", "x-api-key"], "msg": msg, "type": "unauthorized"}]}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", b'Bearer realm="recsys"')]
    return body, headers


def app_path(scope: dict) -> str:
    """The path inside the app: ASGI ``path`` includes ``root_path`` (Serve's route prefix); strip it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


class ApiKeyMiddleware:
    """ASGI middleware answering 401 on protected paths before the body is read or parsed."""

    def __init__(self, app: Any, guard: ApiKeyGuard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and self.guard.protects(app_path(scope)):
            key = presented_key(scope.get("headers") or [])
            if not self.guard.accepts(key):
                body, headers = _unauthorized(missing=key is None, configured=self.guard.configured)
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
