"""AES-256-GCM for sealed fields: the one module that imports ``cryptography``, and only
when a codec first meets an event class with personal fields (the package is the optional
``crypto`` extra: ``import cqrskit`` works without it).

A token is ``nonce (12 bytes) + ciphertext + tag (16 bytes)``, in standard base64. The
nonce is random per seal: with 96 random bits, a key may seal about 2^32 values before a
repeated nonce becomes likely enough to matter (NIST SP 800-38D, 8.3), far more than one
person's events hold. The associated data binds a token to where it was sealed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import Any

from .errors import ConfigurationError

__all__ = ["Cipher", "require"]

_NONCE = 12


@functools.cache
def _aead() -> tuple[Any, type[Exception]] | None:
    """``(AESGCM, InvalidTag)``, imported once; None without the package."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        return None
    return AESGCM, InvalidTag


def require(what: str) -> None:
    if _aead() is None:
        raise ConfigurationError(
            f"{what} declares personal fields: sealing them needs the 'cryptography'"
            " package (pip install 'cqrskit[crypto]')"
        )


class Cipher:
    """Seals and opens values with one subject's key (an AESGCM object per key is made
    once: its key schedule costs more than a small seal)."""

    __slots__ = ("_aead", "_invalid")

    def __init__(self, key: bytes) -> None:
        found = _aead()
        if found is None:
            raise ConfigurationError("sealed fields need the 'cryptography' package")
        aesgcm, self._invalid = found
        self._aead: Any = aesgcm(key)

    def seal(self, plaintext: bytes, associated: bytes) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext, associated)
        return base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, token: str, associated: bytes) -> bytes | None:
        """The plaintext; None when the token does not open (damaged, or sealed elsewhere)."""
        try:
            raw = base64.b64decode(token, validate=True)
            plain: bytes = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], associated)
        except (self._invalid, ValueError, binascii.Error):
            return None
        return plain
