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
from typing import Literal, Protocol
from urllib.parse import urlsplit

from .codec import Codec
from .errors import ConfigurationError
from .eventstore import EventStore
from .lease import Lease
from .projection import Projection
from .readside import ReadDatabase

__all__ = [
    "Backend",
    "ClosableLease",
    "Location",
    "Options",
    "ReadDurability",
    "check_read_durability",
    "open_url",
]

_SCHEMES = {
    "sqlite": "sqlite",
    "postgresql": "postgres",
    "postgres": "postgres",
    "memory": "memory",
}


class ClosableLease(Lease, Protocol):
    async def close(self) -> None: ...


ReadDurability = Literal["relaxed", "strict"]
"""How the read database commits (the event store is not concerned: see :class:`Options`).

``"relaxed"`` (the default): a commit of the read database does not wait for the disk
(SQLite ``synchronous=NORMAL`` in WAL mode; PostgreSQL ``SET LOCAL synchronous_commit =
off`` in each of the read database's write transactions). A process crash (SIGKILL, an
exception, an OOM kill) loses nothing; a power loss or an operating-system crash (and,
on PostgreSQL, a crash of the read database's server) may lose the last commits. That is
safe because the read side is derived from the log and each batch commits its rows with
its checkpoint in one transaction: a lost tail of commits is lost whole, rows and
checkpoint together, and the projection re-applies those events from the older checkpoint.
Nothing is applied twice, nothing is skipped. See docs/consistency.md for what it means
to ``X-Position`` tokens.

``"strict"``: every commit of the read database waits for its fsync (SQLite
``synchronous=FULL``; PostgreSQL the server's own ``synchronous_commit``, ``on`` unless
configured otherwise), so a read model never steps back, even after a power loss."""


_READ_DURABILITIES: tuple[ReadDurability, ...] = ("relaxed", "strict")


def check_read_durability(value: str) -> ReadDurability:
    """``value`` if it names a :data:`ReadDurability`, else a ConfigurationError."""
    for known in _READ_DURABILITIES:
        if value == known:
            return known
    names = ", ".join(repr(k) for k in _READ_DURABILITIES)
    raise ConfigurationError(f"read durability must be one of {names}, not {value!r}")


@dataclass(frozen=True)
class Options:
    """What a backend may be tuned with; each takes what applies to it."""

    connections: int = 12
    """PostgreSQL: the most connections this process opens, both databases together
    (split by :func:`cqrskit.backends.postgres.url.split_budget`)."""
    pool_timeout: float = 1.0
    """PostgreSQL: seconds a call waits for a pooled connection before it fails."""
    read_durability: ReadDurability = "relaxed"
    """Whether the read database's commits wait for the disk: ``"relaxed"`` (the default)
    does not, ``"strict"`` does (see :data:`ReadDurability`). The event store always does:
    a command that answered is durable, whatever this says."""

    def __post_init__(self) -> None:
        check_read_durability(self.read_durability)


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
