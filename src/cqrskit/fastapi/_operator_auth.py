"""The operator token at the HTTP edge: who may reach the ``/ops`` routes.

Two ways in, both proving knowledge of the one operator token:

- ``Authorization: Bearer <token>`` (scripts, curl): compared in constant time, on the
  SHA-256 digests so that not even the token's length leaks;
- the console's session cookie, for a browser (which cannot send a Bearer header when it
  navigates): ``<expiry>.<HMAC-SHA256(token, expiry)>``, set by the login form. It holds no
  token, expires (8 hours by default), and changing the token ends every session.
  ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it),
  ``Path=<prefix>`` (no other route of the app sees it), ``Secure`` over HTTPS.

A request that carries a Bearer token is judged on it alone (a wrong token is 401 whatever
cookie comes with it), so a user's bearer token of the app never opens these routes; other
schemes (a proxy's Basic credentials) open nothing and are left to the proxy.

A change asked with the cookie must also carry ``X-Ops-Console: 1`` and a JSON
``Content-Type``: a cross-site form can send neither without a CORS preflight, which these
routes never grant (the second line of defence against CSRF, after ``SameSite=Strict``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from typing import Literal

from fastapi import Request
from fastapi.responses import Response

from ..errors import ConfigurationError

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "MIN_TOKEN_LENGTH",
    "SESSION_SECONDS",
    "Denied",
    "OperatorAuth",
]

COOKIE = "cqrskit_ops"
CSRF_HEADER = "X-Ops-Console"
SESSION_SECONDS = 8 * 3600.0
MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused: the token is the only lock on these routes."""

Via = Literal["bearer", "cookie"]


class Denied(Exception):
    """Not let in: ``status`` (401, or 403 for a cookie change without the CSRF proofs)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class OperatorAuth:
    """Checks requests against one operator token (see the module docstring)."""

    def __init__(
        self,
        token: str,
        *,
        session: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
            raise ConfigurationError(
                f"the operator token must be at least {MIN_TOKEN_LENGTH} characters,"
                " without surrounding spaces"
            )
        self._digest = _digest(token)
        self._key = token.encode("utf-8", "surrogatepass")
        self.session = session
        self._clock = clock

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(_digest(given), self._digest)

    # -- the session cookie --------------------------------------------------------------------

    def _mac(self, expires: int) -> str:
        message = f"cqrskit-ops-session:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        expires = math.ceil(self._clock() + self.session)
        return f"{expires}.{self._mac(expires)}"

    def session_ok(self, value: str) -> bool:
        expiry, dot, mac = value.partition(".")
        if not (dot and expiry.isascii() and expiry.isdigit() and len(expiry) <= 12):
            return False
        expires = int(expiry)
        fresh = expires > self._clock()
        return hmac.compare_digest(self._mac(expires).encode(), mac.encode()) and fresh

    def set_cookie(self, response: Response, request: Request, path: str) -> None:
        response.set_cookie(
            COOKIE,
            self.new_session(),
            max_age=math.ceil(self.session),
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def clear_cookie(response: Response, request: Request, path: str) -> None:
        response.delete_cookie(
            COOKIE,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    # -- requests ------------------------------------------------------------------------------

    def check(self, request: Request, *, change: bool = False) -> Via:
        """How ``request`` proved the token; raises :class:`Denied` when it did not."""
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            if self.token_ok(credentials.strip()):
                return "bearer"
            raise Denied(401, "Wrong operator token")
        cookie = request.cookies.get(COOKIE)
        if cookie is None or not self.session_ok(cookie):
            raise Denied(401, "The operator token is required: Authorization: Bearer <token>")
        if change:
            content_type = request.headers.get("content-type", "")
            is_json = content_type.split(";")[0].strip().lower() == "application/json"
            if request.headers.get(CSRF_HEADER) != "1" or not is_json:
                raise Denied(
                    403,
                    f"A change asked with the console's cookie needs the {CSRF_HEADER}: 1"
                    " header and a JSON body",
                )
        return "cookie"
