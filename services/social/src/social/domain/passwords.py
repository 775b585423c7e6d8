"""Password hashing with scrypt, a memory-hard KDF from the standard library.

Encoded as ``scrypt$n$r$p$salt$hash`` (salt and hash in unpadded base64url) so the cost
can be raised later without breaking stored hashes: verification reads the parameters
from the hash itself. CPU-bound: the application runs it off the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["ScryptParams", "hash_password", "verify_password"]

_DKLEN = 32


@dataclass(frozen=True, slots=True)
class ScryptParams:
    n: int = 2**14
    """CPU/memory cost: 16 MiB of memory per hash with r=8."""
    r: int = 8
    p: int = 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=_DKLEN
    )


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    params = params or ScryptParams()
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, params.n, params.r, params.p)
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time comparison; False for a malformed hash rather than an error."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _derive(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
