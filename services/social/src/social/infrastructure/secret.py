"""The token signing key: from ``SOCIAL_SECRET``, else ``secret.key`` in the data dir.

The file is created on first run with mode 0600, atomically (written under a temporary
name, then hard-linked into place), so ``serve`` and ``worker`` starting together agree on
one key and neither reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["load_or_create_secret"]

_FILE = "secret.key"


def load_or_create_secret(data_dir: Path) -> bytes:
    path = data_dir / _FILE
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode("ascii")
    tmp = data_dir / f".{_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes().strip()  # another process won the race: use its key
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return key
