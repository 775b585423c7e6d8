"""Open an event store, its read database and their lease from a URL.

=================================  ========================================================
``sqlite:///DIR``                  ``DIR/write.db`` and ``DIR/read.db`` (``DIR`` relative;
                                   ``sqlite:////abs/dir`` for an absolute path)
``postgresql://USER@HOST/DB``      events and read models in one database, or with
                                   ``read_url`` the read models in another
``memory://``                      everything in this process, gone at close (tests)
=================================  ========================================================

The scheme names the backend package (``cqrskit.backends.<name>``); each has a ``url``
module with ``open_location``, imported only when its scheme is used, so the core never
imports a driver (as Django's ``ENGINE`` setting names a package of ``db.backends``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .codec import Codec
from .errors import ConfigurationError
from .eventstore import EventStore
from .lease import Lease
from .projection import Projection
from .readside import ReadDatabase

__all__ = ["Backend", "ClosableLease", "Location", "Options", "open_url"]

_SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "memory": "memory",
}


class ClosableLease(Lease, Protocol):
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Options:
    """What a backend may be tuned with; each takes what applies to it."""

    connections: int = 12
    """PostgreSQL: the most connections this process opens, both databases together
    (split by :func:`cqrskit.backends.postgres.url.split_budget`)."""
    pool_timeout: float = 1.0
    """PostgreSQL: seconds a call waits for a pooled connection before it fails."""


@dataclass(frozen=True)
class Location:
    """A parsed URL (and the optional second one of the read database)."""

    url: str
    scheme: str
    path: str
    """The path after the scheme (SQLite: the directory)."""
    read_url: str | None = None

    def refuse(self, why: str) -> ConfigurationError:
        return ConfigurationError(f"{_safe(self.url)}: {why}")


@dataclass
class Backend:
    """What a URL opened. ``directory``: where the backend keeps files, if anywhere."""

    store: EventStore
    db: ReadDatabase
    lease: ClosableLease | None = None
    directory: Path | None = None


class _Opener(Protocol):
    async def __call__(
        self, location: Location, codec: Codec, inline: list[Projection], options: Options
    ) -> Backend: ...


def parse(url: str, read_url: str | None = None) -> Location:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(f"{_safe(url)}: unknown kind of database (known: {known})")
    path = url.split("://", 1)[1]
    if scheme == "sqlite":
        # As SQLAlchemy spells it: sqlite:///relative/dir, sqlite:////absolute/dir.
        if not path.startswith("/") or len(path) < 2:
            raise ConfigurationError(f"{url}: write sqlite:///DIR (three slashes, then DIR)")
        path = path[1:]
    if read_url is not None and urlsplit(read_url).scheme.lower() != scheme:
        raise ConfigurationError("the read database must be of the same kind as the events'")
    return Location(url, scheme, path, read_url)


async def open_url(
    url: str,
    codec: Codec,
    inline: list[Projection],
    *,
    read_url: str | None = None,
    options: Options | None = None,
) -> Backend:
    """Open the backend ``url`` names (see the module docstring)."""
    location = parse(url, read_url)
    module_name = f"cqrskit.backends.{_SCHEMES[location.scheme]}.url"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # its driver is not installed
        raise ConfigurationError(
            f"{location.scheme}:// needs a driver this installation lacks ({exc.name});"
            " install cqrskit with the extra of that database"
        ) from exc
    opener: _Opener = module.open_location
    return await opener(location, codec, inline, options or Options())


def _safe(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
