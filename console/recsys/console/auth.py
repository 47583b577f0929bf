"""The read key: every page and download needs it; closed by default.

A client proves it holds a key in one of two ways:

* a header, ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (scripts, curl, probes of the JSON);
* a login cookie for browsers: ``GET /login`` shows a form, ``POST /login`` checks the key and sets the
  cookie ``recsys_console`` (HttpOnly, SameSite=Strict) holding an HMAC of the key, not the key. The
  cookie stops working when the key is rotated. ``POST /login`` is the console's only non-GET route and
  it writes nothing on the server.

Keys come from an environment variable (default ``RECSYS_CONSOLE_READ_KEY``; the Helm chart maps a Secret
to it) and/or a file; several comma/newline-separated keys allow a rotation without downtime. With no key
configured every page answers 401 unless the operator chose ``insecure`` (``recsys console --insecure``).
Comparisons are constant-time; the key is never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

COOKIE_NAME = "recsys_console"
OPEN_PATHS = frozenset({"/login", "/healthz", "/static/console.css"})


def load_read_keys(env_name: str, key_file: Path | None, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The configured keys (env var and/or file); an unreadable configured file is an error, never 'open'."""
    env = os.environ if environ is None else environ
    raw = [env.get(env_name, "")]
    if key_file is not None:
        try:
            raw.append(Path(key_file).read_text())
        except OSError as e:
            raise RuntimeError(f"read_key_file {key_file} is not readable: {e.strerror}") from e
    keys = {k.strip() for chunk in raw for k in chunk.replace("\n", ",").split(",")}
    return frozenset(k for k in keys if k)


class ReadKeyGuard:
    """Decides whether a request may read; see the module docstring for the accepted credentials."""

    def __init__(self, keys: frozenset[str], insecure: bool = False):
        self._keys = tuple(k.encode() for k in keys)
        self._tokens = tuple(self.cookie_token(k) for k in keys)
        self.insecure = insecure

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or not self.insecure

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    @staticmethod
    def cookie_token(key: str) -> str:
        """What the login cookie holds: an HMAC of the key (the key itself never sits in the browser)."""
        return hmac.new(key.encode(), b"recsys-console-session", hashlib.sha256).hexdigest()

    def check_key(self, presented: str | None) -> bool:
        if not presented:
            return False
        p = presented.encode()
        return any(hmac.compare_digest(p, k) for k in self._keys)

    def token_for(self, presented: str) -> str | None:
        """The cookie value for a correct key, else None."""
        return self.cookie_token(presented) if self.check_key(presented) else None

    def allows(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        if not self.enabled:
            return True
        key = headers.get("x-api-key")
        auth = headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if self.check_key(key):
            return True
        token = cookies.get(COOKIE_NAME)
        return bool(token) and any(hmac.compare_digest(token.encode(), t.encode()) for t in self._tokens)

    def denial_message(self) -> str:
        if not self.configured:
            return ("no read key is configured on this console: set RECSYS_CONSOLE_READ_KEY or --read-key-file "
                    "(or start it with --insecure for local use)")
        return "missing or wrong read key: send X-API-Key or Authorization: Bearer, or log in at /login"
