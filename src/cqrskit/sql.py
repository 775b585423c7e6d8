"""The small SQL surface that projections and inline write-model handlers use.

Handlers are plain synchronous functions that receive a :class:`SqlTx`: batches run off
the event loop (in a worker thread) inside one database transaction, on SQLite and on
PostgreSQL alike. Statements use ``?`` placeholders on every backend; the PostgreSQL
adapter translates them. Write portable SQL: ``INSERT ... ON CONFLICT ... DO ...``,
``RETURNING``, ``COALESCE`` work on both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

__all__ = ["Row", "SqlTx"]

Row = tuple[Any, ...]


class SqlTx(Protocol):
    """One open transaction. Driver errors surface as :mod:`cqrskit.errors` persistence errors."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed (-1 when not applicable)."""
        ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    @property
    def deferred(self) -> bool:
        """Are statements sent without waiting for their answers (a pipelined PostgreSQL
        transaction)? Then a row count or an error arrives only at :meth:`flush` or at the
        commit."""
        ...

    def flush(self) -> None:
        """Make sure every statement sent so far has run; a deferred error raises here.

        A no-op where statements run one by one. In a pipelined transaction (PostgreSQL,
        for projections that declare ``pipelined = True``) statements are sent without
        waiting for their answers, so an error may surface only at the next sync point.
        """
        ...
