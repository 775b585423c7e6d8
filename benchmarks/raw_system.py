"""The physical limit: plain sqlite3 / psycopg with hand-written SQL, no framework.

Write side: one transaction per command that loads the stream it checks and inserts one
row into ``events`` (the unique ``(stream_id, stream_version)`` is the optimistic
concurrency check). Read side: a loop that reads events after its checkpoint in batches
and applies them to ``bench_users`` with the checkpoint in the same transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
import psycopg

from .measure import MIN_LAG_SAMPLES, LagProbe, Target, run_clients
from .workload import READ_MODEL_DDL, ClientScript, Follow, Op, Publish, Register, history

BATCH = 1000

SQLITE_EVENTS = """CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload BLOB NOT NULL,
    recorded_at REAL NOT NULL,
    UNIQUE (stream_id, stream_version)
)"""

PG_EVENTS = """CREATE TABLE IF NOT EXISTS events (
    position BIGSERIAL PRIMARY KEY,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL,
    UNIQUE (stream_id, stream_version)
)"""

CHECKPOINT_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_checkpoint (name TEXT PRIMARY KEY, position BIGINT)"
)

INSERT_EVENT = (
    "INSERT INTO events (stream_id, stream_version, type, payload, recorded_at)"
    " VALUES (?, ?, ?, ?, ?)"
)

_SQLITE_WRITER = threading.Lock()

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def event_row(op: Op, now: float) -> tuple[str, int, str, bytes, float]:
    """The events row of one operation (every stream of the workload holds one event)."""
    if isinstance(op, Register):
        payload = {"user_id": str(op.user_id), "email": op.email}
        return f"user-{op.user_id}", 1, "UserRegistered", _encode(payload), now
    if isinstance(op, Publish):
        payload = {
            "post_id": str(op.post_id),
            "author_id": str(op.author_id),
            "content": op.content,
        }
        return f"post-{op.post_id}", 1, "PostPublished", _encode(payload), now
    payload = {"follower_id": str(op.follower_id), "followee_id": str(op.followee_id)}
    return f"follow-{op.follower_id}-{op.followee_id}", 1, "UserFollowed", _encode(payload), now


def referenced_stream(op: Op) -> str | None:
    """The stream a command must load to decide (the author, the followee)."""
    if isinstance(op, Publish):
        return f"user-{op.author_id}"
    if isinstance(op, Follow):
        return f"user-{op.followee_id}"
    return None


class _Db:
    """The few calls the raw system needs, on either driver, with ``?`` placeholders."""

    def __init__(self, backend: str, where: str) -> None:
        self.pg = backend == "postgresql"
        self.sqlite: sqlite3.Connection | None = None
        self.psql: psycopg.Connection[Any] | None = None
        if self.pg:
            self.psql = psycopg.connect(where)
        else:
            conn = sqlite3.connect(where, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self.sqlite = conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def begin(self, write: bool = True) -> None:
        if self.sqlite is not None:
            self.sqlite.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self) -> None:
        if self.sqlite is not None:
            self.sqlite.execute("COMMIT")
        else:
            assert self.psql is not None
            self.psql.commit()

    def rollback(self) -> None:
        if self.sqlite is not None:
            if self.sqlite.in_transaction:
                self.sqlite.execute("ROLLBACK")
        else:
            assert self.psql is not None
            self.psql.rollback()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self.sqlite is not None:
            self.sqlite.execute(sql, params)
        else:
            assert self.psql is not None
            self.psql.execute(self._sql(sql), params, prepare=True)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.sqlite is not None:
            self.sqlite.executemany(sql, rows)
        else:
            assert self.psql is not None
            with self.psql.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite is not None:
            return self.sqlite.execute(sql, params).fetchall()
        assert self.psql is not None
        return self.psql.execute(self._sql(sql), params, prepare=True).fetchall()

    def pipeline(self) -> contextlib.AbstractContextManager[Any]:
        """PostgreSQL pipeline mode: statements go out without waiting for each result."""
        return self.psql.pipeline() if self.psql is not None else contextlib.nullcontext()

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        if self.psql is not None:
            self.psql.close()


class RawSystem:
    name = "raw"

    def __init__(self, target: Target) -> None:
        self.target = target
        db = self._write_db()
        db.begin()
        db.execute(PG_EVENTS if db.pg else SQLITE_EVENTS)
        db.commit()
        db.close()

    def _write_db(self) -> _Db:
        return _Db(self.target.backend, self.target.write)

    def _read_db(self) -> _Db:
        db = _Db(self.target.backend, self.target.read)
        db.begin()
        for ddl in (*READ_MODEL_DDL, CHECKPOINT_DDL):
            db.execute(ddl)
        db.commit()
        return db

    def close(self) -> None:
        pass

    # -- write side -------------------------------------------------------------------------

    def seed(self, n_events: int) -> None:
        db = self._write_db()
        now = time.time()
        rows = [event_row(op, now) for op in history(n_events)]
        if db.psql is not None:
            with (
                db.psql.cursor() as cur,
                cur.copy(
                    "COPY events (stream_id, stream_version, type, payload, recorded_at) FROM STDIN"
                ) as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            db.commit()
        else:
            for i in range(0, len(rows), 10_000):
                db.begin()
                db.executemany(INSERT_EVENT, rows[i : i + 10_000])
                db.commit()
        db.close()

    def _executor(self) -> tuple[Callable[[Op], None], _Db]:
        db = self._write_db()

        def execute(op: Op) -> None:
            if db.sqlite is not None:
                # One writer at a time, queued in-process: SQLite admits one writer anyway,
                # and its busy handler would otherwise sleep for milliseconds per collision.
                with _SQLITE_WRITER:
                    run(op)
            else:
                run(op)

        def run(op: Op) -> None:
            db.begin()
            try:
                if db.pg:
                    # Serialise appends so positions are assigned in commit order: a
                    # reader that saw position N never later finds a smaller one committed.
                    db.execute("SELECT pg_advisory_xact_lock(7245)")
                stream = referenced_stream(op)
                if stream is not None and not db.fetchall(
                    "SELECT stream_version, type, payload FROM events WHERE stream_id = ?"
                    " ORDER BY stream_version",
                    (stream,),
                ):
                    raise LookupError(stream)
                db.execute(INSERT_EVENT, event_row(op, time.time()))
            except BaseException:
                db.rollback()
                raise
            db.commit()

        return execute, db

    def commands(self, clients: int, seconds: float) -> float:
        opened: list[_Db] = []

        def make(_client: int) -> Callable[[Op], None]:
            execute, db = self._executor()
            opened.append(db)
            return execute

        try:
            return run_clients(clients, seconds, make)
        finally:
            for db in opened:
                db.close()

    # -- read side --------------------------------------------------------------------------

    def _project_batch(self, read: _Db, rows: list[tuple[Any, ...]]) -> None:
        """Apply one batch and move the checkpoint in the same transaction (exactly once)."""
        read.begin()
        try:
            with read.pipeline():
                self._apply_rows(read, rows)
        except BaseException:
            read.rollback()
            raise
        read.commit()

    @staticmethod
    def _apply_rows(read: _Db, rows: list[tuple[Any, ...]]) -> None:
        for _position, type_, payload in rows:
            data = _decode(payload)
            if type_ == "UserRegistered":
                read.execute(
                    "INSERT INTO bench_users (id, email) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                    (data["user_id"], data["email"]),
                )
            elif type_ == "PostPublished":
                read.execute(
                    "UPDATE bench_users SET post_count = post_count + 1 WHERE id = ?",
                    (data["author_id"],),
                )
            elif type_ == "UserFollowed":
                read.execute(
                    "UPDATE bench_users SET following_count = following_count + 1 WHERE id = ?",
                    (data["follower_id"],),
                )
                read.execute(
                    "UPDATE bench_users SET follower_count = follower_count + 1 WHERE id = ?",
                    (data["followee_id"],),
                )
        read.execute(
            "INSERT INTO bench_checkpoint (name, position) VALUES ('users', ?)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (rows[-1][0],),
        )

    def _fetch(self, write: _Db, after: int) -> list[tuple[Any, ...]]:
        write.begin(write=False)
        rows = write.fetchall(
            "SELECT position, type, payload FROM events WHERE position > ?"
            " ORDER BY position LIMIT ?",
            (after, BATCH),
        )
        write.rollback()
        return rows

    def replay(self, n_events: int, cap: float, *, scratch: bool = False) -> float:
        """Events per second of projecting the log from 0 up to ``n_events`` (or ``cap`` s).

        ``scratch``: the read tables are a fresh copy nobody reads until it is complete
        (what cqrskit's SQLite rebuild does): batches skip the fsync (``synchronous=OFF``)
        and one durable commit at the end makes the whole copy durable at once.
        """
        write, read = self._write_db(), self._read_db()
        scratch = scratch and read.sqlite is not None
        if scratch:
            read.execute("PRAGMA synchronous = OFF")
        try:
            start = time.perf_counter()
            position = done = 0
            while done < n_events and time.perf_counter() - start < cap:
                rows = self._fetch(write, position)[: n_events - done]
                if not rows:
                    break
                self._project_batch(read, rows)
                position = rows[-1][0]
                done += len(rows)
            if scratch:
                read.execute("PRAGMA synchronous = FULL")
                read.begin()
                read.execute(CHECKPOINT_DDL)
                read.commit()  # syncs the WAL, and with it every batch before
            return done / (time.perf_counter() - start)
        finally:
            write.close()
            read.close()

    def catchup(self, n_events: int, cap: float) -> float:
        return self.replay(n_events, cap)

    def rebuild(self, n_events: int, cap: float) -> float:
        return self.replay(n_events, cap, scratch=True)

    def lag(self, samples: int, cap: float) -> list[float]:
        """Seconds from each command's answer to its visibility, projector running live."""
        execute, write = self._executor()
        projector_db, read = self._write_db(), self._read_db()
        probe = LagProbe(self.target)
        wake, stop = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def project() -> None:
            position = 0
            try:
                while not stop.is_set():
                    wake.wait(0.1)
                    wake.clear()
                    while rows := self._fetch(projector_db, position):
                        self._project_batch(read, rows)
                        position = rows[-1][0]
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=project)
        thread.start()
        try:
            script = ClientScript(0)
            lags: list[float] = []
            began = time.perf_counter()
            for _ in range(samples):
                if time.perf_counter() - began > cap and len(lags) >= MIN_LAG_SAMPLES:
                    break
                op = script.next()
                execute(op)
                start = time.perf_counter()
                wake.set()  # the in-process commit notification
                lags.append(probe.lag(op, start))
                if errors:
                    raise errors[0]
            return lags
        finally:
            stop.set()
            wake.set()
            thread.join()
            for db in (write, projector_db, read):
                db.close()
            probe.close()
