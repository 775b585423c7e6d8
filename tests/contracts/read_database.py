"""The read database contract (with its rebuild target), as one abstract test suite every
backend passes.

How to run it against a backend: subclass :class:`ReadDatabaseContract` in a module whose
name starts with ``test_``, with a class name starting with ``Test``, and implement
:meth:`ReadDatabaseContract.make_database` (a fresh, empty database; the suite calls it
once per test). Put whatever the backend needs on ``self`` from an autouse fixture::

    class TestSqliteReadDatabase(ReadDatabaseContract):
        @pytest.fixture(autouse=True)
        def _where(self, tmp_path: Path) -> None:
            self.path = tmp_path / "read.db"

        async def make_database(self) -> ReadDatabase:
            return SqliteDatabase(self.path)

The suite discards every rebuild target it opened, then closes every database it made
(``dispose_database``, override it for extra cleanup), before the fixtures that ``_where``
uses are torn down (a dropped PostgreSQL database could not drop a rebuild schema). The
SQL is portable (SQLite and PostgreSQL), as projections' SQL is.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import pytest

from cqrskit import (
    ConfigurationError,
    IntegrityError,
    PersistenceError,
    Projection,
    ReadDatabase,
    RebuildTarget,
    Row,
    SqlTx,
    StoreClosed,
    UniqueViolation,
)
from cqrskit.checkpoints import (
    complete_rebuild,
    ensure_table,
    lock_position,
    read_mark,
    read_position,
    write_position,
)

# -- the tables the suite works with ------------------------------------------------------------

ITEMS_TABLE = (
    "CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, code TEXT NOT NULL, n INTEGER)"
)


class Items(Projection):
    """The projection being rebuilt: its newer schema adds a UNIQUE index on ``code``."""

    name = "items"
    tables: ClassVar[tuple[str, ...]] = ("items",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(ITEMS_TABLE)
        tx.execute("CREATE UNIQUE INDEX IF NOT EXISTS items_by_code ON items (code)")


class NoTables(Projection):
    name = "no_tables"


class Ghostly(Items):
    """Declares a table its schema never creates."""

    name = "ghostly"
    tables = ("items", "ghost")


class Boom(Exception):
    """Raised by the tests' own functions: must come out unchanged."""


def add(*rows: tuple[str, str, int]) -> Callable[[SqlTx], None]:
    def run(tx: SqlTx) -> None:
        for row in rows:
            tx.execute("INSERT INTO items (id, code, n) VALUES (?, ?, ?)", row)

    return run


def items(tx: SqlTx) -> list[Row]:
    return [tuple(r) for r in tx.fetchall("SELECT id, code, n FROM items ORDER BY id")]


def create_old_items(tx: SqlTx) -> None:
    """The live table as an older version of the projection made it: no index on ``code``."""
    tx.execute(ITEMS_TABLE)


LIVE_ROWS: list[Row] = [("a", "same", 1), ("b", "same", 2)]
"""Live rows the newer schema would refuse (a duplicate code): only the old table holds them."""
FRESH_ROWS: list[Row] = [("x", "x-code", 10), ("y", "y-code", 20), ("z", "z-code", 30)]


class ReadDatabaseContract(ABC):
    """Behaviour every :class:`~cqrskit.readside.ReadDatabase` must have."""

    writes_commit_during_reads: ClassVar[bool] = True
    """False for a backend that runs its reads and writes in turn (one thread): a write
    issued while a read runs then commits after it, and the snapshot test cannot show a
    commit between the read's statements."""

    @abstractmethod
    async def make_database(self) -> ReadDatabase:
        """A new database on an empty backend (called once per test)."""

    async def dispose_database(self, db: ReadDatabase) -> None:
        """Release what ``make_database`` made (close() is idempotent, so always safe)."""
        await db.close()

    # -- plumbing ---------------------------------------------------------------------------

    @pytest.fixture
    def _where(self) -> None:
        """Override it (same name, autouse) to prepare what ``make_database`` needs: the
        suite's disposal depends on it, so it runs while the backend is still there."""
        return None  # a backend in memory needs nothing

    @pytest.fixture(autouse=True)
    async def _dispose_all(self, _where: None) -> AsyncIterator[None]:
        self._made: list[ReadDatabase] = []
        self._targets: list[RebuildTarget] = []
        yield
        for target in self._targets:
            await target.discard()
        for made in self._made:
            await self.dispose_database(made)

    @pytest.fixture
    async def db(self, _dispose_all: None) -> ReadDatabase:
        made = await self.make_database()
        self._made.append(made)
        return made

    async def open_target(self, db: ReadDatabase, projection: Projection) -> RebuildTarget:
        """A rebuild target that is discarded after the test."""
        target = await db.open_rebuild(projection)
        self._targets.append(target)
        return target

    async def live_with_old_items(self, db: ReadDatabase, checkpoint: int = 3) -> None:
        """The live state the rebuild tests start from: the old table with LIVE_ROWS,
        and the projection's checkpoint at ``checkpoint``."""
        await db.write_schema(ensure_table)
        await db.write_schema(create_old_items)
        await db.write(add(*LIVE_ROWS))
        await db.write(lambda tx: write_position(tx, "items", checkpoint, "running", 0.0, 0.0))

    async def built_target(self, db: ReadDatabase, projection: Projection) -> RebuildTarget:
        target = await self.open_target(db, projection)
        await target.write(projection.create_schema)
        await target.write(add(*FRESH_ROWS))
        return target

    async def assert_live_untouched(self, db: ReadDatabase, checkpoint: int = 3) -> None:
        # The old table: the new schema's index would refuse LIVE_ROWS (one code twice).
        assert await db.read(items) == LIVE_ROWS
        assert await db.read(lambda tx: read_position(tx, "items")) == checkpoint

    # -- the checkpoint table ---------------------------------------------------------------

    async def test_a_checkpoint_table_from_before_event_ids_gets_the_column(
        self, db: ReadDatabase
    ) -> None:
        def old_table(tx: SqlTx) -> None:  # the table as the first release made it
            tx.execute(
                "CREATE TABLE cqrskit_projections (name TEXT PRIMARY KEY, position BIGINT"
                " NOT NULL, state TEXT NOT NULL, error TEXT, updated_at DOUBLE PRECISION,"
                " events_per_second DOUBLE PRECISION NOT NULL DEFAULT 0, rebuild_position"
                " BIGINT, rebuild_updated_at DOUBLE PRECISION)"
            )
            tx.execute("INSERT INTO cqrskit_projections (name, position, state)"
                       " VALUES ('items', 12, 'stopped')")  # fmt: skip

        await db.write_schema(old_table)
        await db.write_schema(ensure_table)
        await db.write_schema(ensure_table)  # twice: nothing to add the second time
        assert await db.read(lambda tx: read_mark(tx, "items")) == (12, None)
        await db.write(lambda tx: write_position(tx, "items", 13, "running", 0.0, 0.0, "e-13"))
        assert await db.read(lambda tx: read_mark(tx, "items")) == (13, "e-13")

    # -- transactions -----------------------------------------------------------------------

    async def test_write_commits_and_read_sees_it(self, db: ReadDatabase) -> None:
        await db.write_schema(Items().create_schema)

        def write(tx: SqlTx) -> str:
            add(("a", "a-code", 1), ("b", "b-code", 2))(tx)
            tx.execute("UPDATE items SET n = n + 10 WHERE id = ?", ("b",))
            return "written"

        assert await db.write(write) == "written"
        assert await db.read(items) == [("a", "a-code", 1), ("b", "b-code", 12)]
        assert await db.read(lambda tx: tx.fetchone("SELECT count(*) FROM items")) == (2,)
        assert await db.read(lambda tx: tx.fetchone("SELECT n FROM items WHERE id = 'q'")) is None

    async def test_an_exception_in_write_rolls_back_all_of_it_and_propagates_unchanged(
        self, db: ReadDatabase
    ) -> None:
        await db.write_schema(Items().create_schema)
        await db.write(add(("a", "a-code", 1)))
        boom = Boom("handler bug")

        def write(tx: SqlTx) -> None:
            add(("b", "b-code", 2))(tx)
            tx.execute("UPDATE items SET n = 100 WHERE id = 'a'")
            tx.execute("DELETE FROM items WHERE id = 'a'")
            raise boom

        with pytest.raises(Boom) as info:
            await db.write(write)
        assert info.value is boom
        assert await db.read(items) == [("a", "a-code", 1)]
        await db.write(add(("b", "b-code", 2)))  # the database goes on working
        assert await db.read(items) == [("a", "a-code", 1), ("b", "b-code", 2)]

    async def test_read_sees_one_consistent_snapshot(self, db: ReadDatabase) -> None:
        await db.write_schema(Items().create_schema)
        await db.write(add(("a", "a-code", 1), ("b", "b-code", 2)))
        loop = asyncio.get_running_loop()
        writes: list[Any] = []

        def read_twice(tx: SqlTx) -> tuple[Row | None, Row | None, list[Row]]:
            first = tx.fetchone("SELECT count(*), sum(n) FROM items")
            # Another transaction changes the table between the read's two statements.
            write = asyncio.run_coroutine_threadsafe(
                db.write(lambda w: w.execute("UPDATE items SET n = n + 100")), loop
            )
            writes.append(write)
            if self.writes_commit_during_reads:
                write.result(timeout=60)  # committed before the second statement
            second = tx.fetchone("SELECT count(*), sum(n) FROM items")
            return first, second, items(tx)

        first, second, rows = await db.read(read_twice)
        await asyncio.wrap_future(writes[0])
        assert first == second == (2, 3)
        assert rows == [("a", "a-code", 1), ("b", "b-code", 2)]
        assert await db.read(lambda tx: tx.fetchone("SELECT sum(n) FROM items")) == (203,)

    async def test_read_is_read_only(self, db: ReadDatabase) -> None:
        await db.write_schema(Items().create_schema)
        with pytest.raises(PersistenceError):
            await db.read(add(("a", "a-code", 1)))
        assert await db.read(items) == []

    async def test_a_unique_violation_is_a_unique_violation_and_rolls_back(
        self, db: ReadDatabase
    ) -> None:
        await db.write_schema(Items().create_schema)
        await db.write(add(("a", "a-code", 1)))
        with pytest.raises(UniqueViolation) as info:
            await db.write(add(("b", "b-code", 2), ("a", "other", 3)))  # primary key
        assert isinstance(info.value, PersistenceError)
        with pytest.raises(UniqueViolation):
            await db.write(add(("c", "c-code", 2), ("d", "a-code", 3)))  # unique index
        assert await db.read(items) == [("a", "a-code", 1)]

    async def test_a_bad_statement_is_a_persistence_error(self, db: ReadDatabase) -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: db.write(lambda tx: tx.execute("SELEKT 1")),
            lambda: db.write(lambda tx: tx.execute("INSERT INTO missing VALUES (1)")),
            lambda: db.read(lambda tx: tx.fetchall("SELECT * FROM missing")),
            lambda: db.read(lambda tx: tx.fetchone("SELECT nope FROM")),
            lambda: db.write_schema(lambda tx: tx.execute("CREATE TABLE (")),
        ]
        for call in calls:
            with pytest.raises(PersistenceError) as info:
                await call()
            # Converted: the error tree of cqrskit, not the driver's (kept as __cause__).
            assert type(info.value).__module__ == "cqrskit.errors"
        assert await db.read(lambda tx: tx.fetchone("SELECT 1")) == (1,)  # still usable

    async def test_a_failed_commit_rolls_back_and_the_database_stays_usable(
        self, db: ReadDatabase
    ) -> None:
        """A deferred constraint fails at COMMIT, not at the statement."""

        def create(tx: SqlTx) -> None:
            tx.execute("CREATE TABLE IF NOT EXISTS parents (id TEXT PRIMARY KEY)")
            tx.execute(
                "CREATE TABLE IF NOT EXISTS children (parent_id TEXT NOT NULL"
                " REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)"
            )

        await db.write_schema(create)
        with pytest.raises(IntegrityError):
            await db.write(lambda tx: tx.execute("INSERT INTO children VALUES ('orphan')"))
        await db.write(lambda tx: tx.execute("INSERT INTO parents VALUES ('p')"))
        await db.write(lambda tx: tx.execute("INSERT INTO children VALUES ('p')"))
        assert await db.read(lambda tx: tx.fetchall("SELECT parent_id FROM children")) == [("p",)]

    async def test_write_schema_is_idempotent_and_concurrent_calls_all_succeed(
        self, db: ReadDatabase
    ) -> None:
        def create(tx: SqlTx) -> None:
            for i in range(3):
                tx.execute(f"CREATE TABLE IF NOT EXISTS raced_{i} (id TEXT PRIMARY KEY, n INTEGER)")
                tx.execute(f"CREATE INDEX IF NOT EXISTS raced_{i}_n ON raced_{i} (n)")
            ensure_table(tx)

        for _ in range(3):
            await asyncio.gather(*(db.write_schema(create) for _ in range(6)))
        await db.write(lambda tx: tx.execute("INSERT INTO raced_2 VALUES ('a', 1)"))
        await db.write_schema(create)  # again, with rows: they stay
        assert await db.read(lambda tx: tx.fetchall("SELECT id, n FROM raced_2")) == [("a", 1)]
        assert await db.read(lambda tx: tx.fetchall("SELECT id FROM raced_0")) == []

    async def test_pipelined_writes_give_the_same_result_as_plain_ones(
        self, db: ReadDatabase
    ) -> None:
        def create(tx: SqlTx) -> None:
            for table in ("plain", "piped"):
                tx.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, n INTEGER NOT NULL)"
                )

        def batch(table: str, start: int) -> Callable[[SqlTx], str]:
            def run(tx: SqlTx) -> str:
                for i in range(start, start + 20):
                    tx.execute(
                        f"INSERT INTO {table} (id, n) VALUES (?, ?) ON CONFLICT (id)"
                        f" DO UPDATE SET n = {table}.n + excluded.n",
                        (f"k{i % 7}", i),
                    )
                tx.execute(f"DELETE FROM {table} WHERE id = ?", ("k3",))
                tx.flush()
                return "done"

            return run

        await db.write_schema(create)
        for start in (0, 20):
            assert await db.write(batch("plain", start)) == "done"
            assert await db.write(batch("piped", start), pipeline=True) == "done"

        def contents(table: str) -> Callable[[SqlTx], list[Row]]:
            return lambda tx: [
                tuple(r) for r in tx.fetchall(f"SELECT id, n FROM {table} ORDER BY id")
            ]

        plain = await db.read(contents("plain"))
        assert len(plain) == 6
        assert await db.read(contents("piped")) == plain

        # A failing pipelined write rolls back whole, as a plain one does.
        def failing(tx: SqlTx) -> None:
            tx.execute("INSERT INTO piped (id, n) VALUES ('new', 1)")
            tx.execute("INSERT INTO piped (id, n) VALUES ('k0', 1)")  # taken
            tx.flush()

        with pytest.raises(UniqueViolation):
            await db.write(failing, pipeline=True)
        assert await db.read(contents("piped")) == plain

    async def test_use_after_close_raises_store_closed(self, db: ReadDatabase) -> None:
        await db.write_schema(Items().create_schema)
        await db.close()
        await db.close()  # idempotent
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: db.read(items),
            lambda: db.write(add(("a", "a-code", 1))),
            lambda: db.write(add(("a", "a-code", 1)), pipeline=True),
            lambda: db.write_schema(ensure_table),
            lambda: db.open_rebuild(Items()),
        ]
        for call in calls:
            with pytest.raises(StoreClosed):
                await call()

    # -- the rebuild target -----------------------------------------------------------------

    async def test_rebuild_builds_under_the_plain_names_invisibly_to_live_reads(
        self, db: ReadDatabase
    ) -> None:
        await self.live_with_old_items(db)
        target = await self.built_target(db, Items())
        await target.write(add(("w", "w-code", 40)), pipeline=True)
        assert await target.write(items) == [("w", "w-code", 40), *FRESH_ROWS]
        with pytest.raises(UniqueViolation):  # the fresh table has the new schema's index
            await target.write(add(("v", "x-code", 50)))
        await self.assert_live_untouched(db)

    async def test_swap_replaces_rows_and_indexes_and_commits_what_decide_wrote(
        self, db: ReadDatabase
    ) -> None:
        await self.live_with_old_items(db, checkpoint=3)
        target = await self.built_target(db, Items())
        seen: list[int] = []

        def decide(tx: SqlTx) -> bool:
            seen.append(lock_position(tx, "items"))  # the live checkpoint
            complete_rebuild(tx, "items", 42, time.time())
            return True

        assert await target.swap(decide) is True
        assert seen == [3]
        assert await db.read(items) == FRESH_ROWS
        assert await db.read(lambda tx: read_position(tx, "items")) == 42
        with pytest.raises(UniqueViolation):  # the index came with the table
            await db.write(add(("dup", "x-code", 1)))
        await db.write(add(("new", "new-code", 1)))
        await target.discard()  # after a swap: the live tables stay
        assert await db.read(items) == [("new", "new-code", 1), *FRESH_ROWS]
        with pytest.raises(UniqueViolation):
            await db.write(add(("dup", "y-code", 1)))

    async def test_swap_creates_tables_the_live_database_lacks(self, db: ReadDatabase) -> None:
        await db.write_schema(ensure_table)
        target = await self.built_target(db, Items())
        assert await target.swap(lambda tx: True) is True
        assert await db.read(items) == FRESH_ROWS

    async def test_decide_false_rolls_back_and_keeps_the_fresh_tables_for_later(
        self, db: ReadDatabase
    ) -> None:
        await self.live_with_old_items(db)
        target = await self.built_target(db, Items())

        def refuse(tx: SqlTx) -> bool:
            lock_position(tx, "items")
            complete_rebuild(tx, "items", 99, time.time())
            return False

        assert await target.swap(refuse) is False
        await self.assert_live_untouched(db)
        # The fresh tables stay: the rebuild catches up further and swaps later.
        await target.write(add(("zz", "zz-code", 50)))

        def accept(tx: SqlTx) -> bool:
            complete_rebuild(tx, "items", 7, time.time())
            return True

        assert await target.swap(accept) is True
        assert await db.read(items) == [*FRESH_ROWS, ("zz", "zz-code", 50)]
        assert await db.read(lambda tx: read_position(tx, "items")) == 7

    async def test_an_exception_in_decide_propagates_and_leaves_live_untouched(
        self, db: ReadDatabase
    ) -> None:
        await self.live_with_old_items(db)
        target = await self.built_target(db, Items())
        boom = Boom("decide failed")

        def explode(tx: SqlTx) -> bool:
            complete_rebuild(tx, "items", 99, time.time())
            raise boom

        with pytest.raises(Boom) as info:
            await target.swap(explode)
        assert info.value is boom
        await self.assert_live_untouched(db)
        assert await target.swap(lambda tx: True) is True  # the fresh tables are still there
        assert await db.read(items) == FRESH_ROWS

    async def test_decide_may_catch_up_into_the_fresh_tables(self, db: ReadDatabase) -> None:
        """What the rebuild does when the live runner got ahead: more batches into the
        fresh tables from inside decide (on the event loop), then the swap goes on."""
        await self.live_with_old_items(db)
        target = await self.built_target(db, Items())
        loop = asyncio.get_running_loop()

        def decide(tx: SqlTx) -> bool:
            lock_position(tx, "items")
            late = target.write(add(("late", "late-code", 99)))
            asyncio.run_coroutine_threadsafe(late, loop).result(timeout=60)
            complete_rebuild(tx, "items", 8, time.time())
            return True

        assert await target.swap(decide) is True
        assert await db.read(items) == [("late", "late-code", 99), *FRESH_ROWS]
        assert await db.read(lambda tx: read_position(tx, "items")) == 8

    async def test_discard_is_idempotent_and_leaves_live_untouched(self, db: ReadDatabase) -> None:
        await self.live_with_old_items(db)
        target = await self.built_target(db, Items())
        await target.discard()
        await target.discard()
        await self.assert_live_untouched(db)
        again = await self.built_target(db, Items())  # a new rebuild starts from nothing
        assert await again.write(items) == FRESH_ROWS
        assert await again.swap(lambda tx: True) is True
        assert await db.read(items) == FRESH_ROWS

    async def test_a_projection_without_tables_cannot_be_rebuilt(self, db: ReadDatabase) -> None:
        with pytest.raises(ConfigurationError):
            await self.open_target(db, NoTables())

    async def test_a_declared_table_the_schema_did_not_create_fails_the_swap(
        self, db: ReadDatabase
    ) -> None:
        await self.live_with_old_items(db)
        target = await self.built_target(db, Ghostly())  # creates items, not ghost

        def decide(tx: SqlTx) -> bool:
            complete_rebuild(tx, "items", 99, time.time())
            return True

        with pytest.raises(ConfigurationError, match="ghost"):
            await target.swap(decide)
        await self.assert_live_untouched(db)  # items, replaced before ghost failed, too
