"""Scratch PostgreSQL databases: created per seeded store and per measurement, all dropped
at the end of the run (their names share one random prefix)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_version(admin_url: str) -> str | None:
    """The server's version string, or None when it does not answer."""
    try:
        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return None
    return str(row[0]) if row else None


def url_for(admin_url: str, dbname: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{dbname}"


@dataclass(frozen=True, slots=True)
class UrlParts:
    host: str
    port: str
    user: str
    password: str
    dbname: str


def split_url(url: str) -> UrlParts:
    parts = urlsplit(url)
    return UrlParts(
        host=parts.hostname or "127.0.0.1",
        port=str(parts.port or 5432),
        user=parts.username or "postgres",
        password=parts.password or "",
        dbname=parts.path.lstrip("/") or "postgres",
    )


class ScratchDatabases:
    """Creates databases named ``bench_<run>_<n>`` and drops every one of them on close.

    A released database is emptied (every schema dropped, ``public`` recreated) and handed
    out again: ``DROP DATABASE`` forces a checkpoint (~0.4 s here), emptying one does not.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._prefix = f"bench_{uuid.uuid4().hex[:8]}"
        self._created: list[str] = []
        self._free: list[str] = []

    def create(self, label: str) -> str:
        """An empty database; returns its URL."""
        if self._free:
            return url_for(self.admin_url, self._free.pop())
        name = f"{self._prefix}_{len(self._created)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return url_for(self.admin_url, name)

    def drop(self, url: str) -> None:
        """Empty the database and keep it for the next :meth:`create`."""
        name = split_url(url).dbname
        if name not in self._created:
            raise ValueError(f"{name} is not a scratch database of this run")
        with psycopg.connect(url, autocommit=True) as conn:
            schemas = conn.execute(
                "SELECT nspname FROM pg_namespace"
                " WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
            ).fetchall()
            for (schema,) in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute("CREATE SCHEMA public")
        self._free.append(name)

    def close(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self._created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()
        self._free.clear()
