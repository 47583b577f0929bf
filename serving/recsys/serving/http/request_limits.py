"""Cheap refusal of oversized request bodies (HTTP 413) before anything parses them.

Runs as ASGI middleware in front of FastAPI: a ``Content-Length`` above ``max_body_bytes`` is
refused from the headers alone (the body is never read); a chunked body is counted while it
streams and refused as soon as it crosses the limit (else replayed to the app), so a giant
upload costs at most the limit in memory and no JSON parsing. Field-level limits (``n``,
``exclude`` length, ...) are the service's 422s; this guards the parser itself.
"""

from __future__ import annotations

import json
from typing import Any


def _too_large(limit: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"detail": [{"loc": ["body"], "msg": f"request body exceeds {limit} bytes",
                                   "type": "body_too_large"}]}).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                  (b"connection", b"close")]


class BodySizeLimitMiddleware:
    def __init__(self, app: Any, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def _refuse(self, send: Any) -> None:
        body, headers = _too_large(self.max_body_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers") or []:
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await self._refuse(send)
                    return
                break

        # Chunked / undeclared length: buffer at most `limit` bytes, then replay them to the app.
        # (Raising from inside the app's receive would surface as a 500 from Starlette's error
        # middleware, so the decision is made here, before the app runs.)
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message.get("type") != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay_receive() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay_receive, send)
