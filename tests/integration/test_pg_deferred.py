"""A deferred PostgreSQL transaction (``write_transaction(..., pipeline=True)``): its first
statements go as one simple query with BEGIN and COMMIT, a longer one goes on in pipeline
mode; either way it is all or nothing, and a read inside it sees what was queued before."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from cqrskit.backends.postgres.connection import PgTx, write_transaction
from cqrskit.errors import IntegrityError, PersistenceError

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection[object]]:
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT, b BYTEA)")
        yield c


def rows(conn: psycopg.Connection[object]) -> list[tuple[object, ...]]:
    return conn.execute("SELECT id, v, b FROM t ORDER BY id").fetchall()


def insert(n: int, start: int = 0) -> Callable[[PgTx], None]:
    def fn(tx: PgTx) -> None:
        assert tx.deferred
        for i in range(start, start + n):
            assert tx.execute("INSERT INTO t VALUES (?, ?, ?)", (i, f"it's {i}", b"\x00\\")) == -1

    return fn


@pytest.mark.parametrize("n", [1, PgTx.BATCH, PgTx.BATCH + 1, 3 * PgTx.BATCH])
def test_short_and_long_deferred_transactions_commit_everything(
    conn: psycopg.Connection[object], n: int
) -> None:
    write_transaction(conn, insert(n), pipeline=True)
    assert rows(conn) == [(i, f"it's {i}", b"\x00\\") for i in range(n)]
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize("n", [2, PgTx.BATCH + 5])
def test_a_failing_statement_rolls_back_the_whole_transaction(
    conn: psycopg.Connection[object], n: int
) -> None:
    def fn(tx: PgTx) -> None:
        insert(n)(tx)
        tx.execute("INSERT INTO t VALUES (?, ?, ?)", (0, "again", b""))  # its key is taken

    with pytest.raises(IntegrityError):
        write_transaction(conn, fn, pipeline=True)
    assert rows(conn) == []
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    write_transaction(conn, insert(1), pipeline=True)
    assert len(rows(conn)) == 1  # the connection goes on


def test_an_error_raised_by_the_caller_sends_nothing_more(
    conn: psycopg.Connection[object],
) -> None:
    def fn(tx: PgTx) -> None:
        insert(3)(tx)
        tx.flush()  # sent: in the open transaction
        insert(2, start=3)(tx)
        raise RuntimeError("a handler failed in Python")

    with pytest.raises(RuntimeError):
        write_transaction(conn, fn, pipeline=True)
    assert rows(conn) == []
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_read_in_a_deferred_transaction_sees_what_was_queued(
    conn: psycopg.Connection[object],
) -> None:
    def fn(tx: PgTx) -> object:
        insert(2)(tx)
        row = tx.fetchone("SELECT count(*) FROM t")
        insert(1, start=2)(tx)
        return None if row is None else row[0]

    assert write_transaction(conn, fn, pipeline=True) == 2
    assert len(rows(conn)) == 3


def test_a_division_by_zero_fails_the_commit(conn: psycopg.Connection[object]) -> None:
    """What checkpoints.advance_position relies on: an error in the last statement undoes
    the statements before it."""

    def fn(tx: PgTx) -> None:
        insert(2)(tx)
        tx.execute("WITH none AS (SELECT 1 WHERE false) SELECT 1 / count(*) FROM none")

    with pytest.raises(PersistenceError, match="division by zero"):
        write_transaction(conn, fn, pipeline=True)
    assert rows(conn) == []
