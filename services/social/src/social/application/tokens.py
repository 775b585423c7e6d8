"""Bearer tokens: ``base64url(user id "." expiry) "." base64url(HMAC-SHA256)``.

Stateless: any process holding the secret verifies them; they expire (default 24 h). Only
the exact form the server issued is accepted (unpadded base64url, canonical encoding).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable

from ..domain import SocialError

__all__ = ["InvalidToken", "TokenService"]


class InvalidToken(SocialError):
    def __init__(self, message: str = "Invalid or expired token") -> None:
        super().__init__(message)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode what :func:`_b64` made, and only that: the decoder accepts other spellings
    of the same bytes (padding, non-zero trailing bits), which must not pass for the
    token the server issued."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not in the form the server issues")
    return data


class TokenService:
    def __init__(
        self, secret: bytes, ttl_seconds: float = 24 * 3600, clock: Callable[[], float] = time.time
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self._ttl = ttl_seconds
        self._clock = clock

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def issue(self, user_id: str) -> str:
        expires = int(self._clock() + self._ttl)
        payload = f"{user_id}.{expires}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def verify(self, token: str) -> str:
        """The user id the token was issued to; :class:`InvalidToken` otherwise."""
        try:
            body, _, signature = token.partition(".")
            payload = _unb64(body)
            valid = hmac.compare_digest(self._sign(payload), _unb64(signature))
            user_id, _, expires = payload.decode("utf-8").rpartition(".")
            expired = int(expires) < self._clock()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidToken() from None
        if not valid or expired or not user_id:
            raise InvalidToken()
        return user_id
