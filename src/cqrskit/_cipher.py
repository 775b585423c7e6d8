"""AES-256-GCM for sealed fields: the one module that imports ``cryptography``, and only
when a codec first meets an event class with personal fields (the package is the optional
``crypto`` extra: ``import cqrskit`` works without it).

A token is ``nonce (12 bytes) + ciphertext + tag (16 bytes)``, stored in standard base64. The
nonce is random per seal: with 96 random bits, a key may seal about 2^32 values before a
repeated nonce becomes likely enough to matter (NIST SP 800-38D, 8.3), far more than one
person's events hold. The associated data binds a token to where it was sealed.
"""

from __future__ import annotations

import binascii
import functools
from typing import Any

from .errors import ConfigurationError
from .keystore import random_bytes

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

    _made: dict[bytes, Cipher] = {}
    _MADE_MAX = 4096

    @classmethod
    def of(cls, key: bytes) -> Cipher:
        """The cipher of ``key``, made once while it is used: a catch-up meets each
        subject's key in batch after batch, and the key schedule costs more than a field's
        decryption. Bounded (cleared when full); it holds keys a caller already had, and is
        never asked whether a key exists (that is the key store's answer, every read)."""
        cipher = cls._made.get(key)
        if cipher is None:
            if len(cls._made) >= cls._MADE_MAX:
                cls._made.clear()
            cipher = cls._made[key] = cls(key)
        return cipher

    def __init__(self, key: bytes) -> None:
        found = _aead()
        if found is None:
            raise ConfigurationError("sealed fields need the 'cryptography' package")
        aesgcm, self._invalid = found
        self._aead: Any = aesgcm(key)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """The token (raw: ``nonce + ciphertext + tag``) of ``plaintext``, with a fresh
        random nonce (:func:`cqrskit.keystore.random_bytes`)."""
        nonce = random_bytes(_NONCE)
        sealed: bytes = self._aead.encrypt(nonce, plaintext, associated)
        return nonce + sealed

    def open(self, token: bytes, associated: bytes) -> bytes | None:
        """The plaintext; None when the token does not open (damaged, or sealed elsewhere)."""
        try:
            raw = binascii.a2b_base64(token, strict_mode=True)
            plain: bytes = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], associated)
        except (self._invalid, ValueError, binascii.Error):
            return None
        return plain
