"""PostgresEventStore: the event store contract, inline handlers, visibility, migrations."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass

import psycopg
import pytest

from cqrskit import (
    FORGOTTEN,
    NO_STREAM,
    Codec,
    ConcurrencyError,
    Event,
    EventStore,
    OperationalError,
    PersistenceError,
    Projection,
    RecordedEvent,
    SchemaError,
    SqlTx,
    UniqueViolation,
    handles,
)
from cqrskit.backends.postgres import PostgresEventStore
from cqrskit.backends.postgres._notify import CHANNEL, LISTENING, RECHECK
from cqrskit.backends.postgres.connection import translate_placeholders
from cqrskit.backends.postgres.migrate import apply, migrations
from cqrskit.eventstore import StreamAppend
from tests.contracts.eventstore import EventStoreContract
from tests.contracts.inline import InlineProjectionContract
from tests.contracts.personal import Joined, Left, personal_codec

postgres = pytest.mark.postgres


@postgres
class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, pg_url: str) -> None:
        self.url = pg_url

    async def make_store(self, codec: Codec) -> EventStore:
        return await PostgresEventStore.open(self.url, codec, pool_max=8)


@postgres
class TestPostgresInlineProjections(InlineProjectionContract):
    dense_positions = False  # a failed append's positions are holes that never fill

    @pytest.fixture(autouse=True)
    def _where(self, pg_url: str) -> None:
        self.url = pg_url

    async def make_store(self, codec: Codec, inline: Sequence[Projection]) -> EventStore:
        return await PostgresEventStore.open(self.url, codec, inline=inline, pool_max=8)


# -- inline handlers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered(Event):
    user_id: str
    email: str


@dataclass(frozen=True)
class Waited(Event):
    """Its inline handler waits at a barrier: proves appends overlap."""


class Emails(Projection):
    """A write-model table kept inline: one account per email."""

    name = "emails"
    tables = ("emails",)

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.barrier = barrier

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS emails (email TEXT PRIMARY KEY, user_id TEXT NOT NULL)"
        )

    @handles(Registered)
    def on_registered(self, tx: SqlTx, event: Registered, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO emails (email, user_id) VALUES (?, ?)", (event.email, event.user_id)
        )

    @handles(Waited)
    def on_waited(self, tx: SqlTx, event: Waited, record: RecordedEvent) -> None:
        assert self.barrier is not None
        self.barrier.wait(timeout=10)


@pytest.fixture
def barrier() -> threading.Barrier:
    return threading.Barrier(2)


@pytest.fixture
async def store(pg_url: str, barrier: threading.Barrier) -> AsyncIterator[PostgresEventStore]:
    opened = await PostgresEventStore.open(
        pg_url, Codec([Registered, Waited]), inline=[Emails(barrier)]
    )
    yield opened
    await opened.close()


@postgres
async def test_unique_violation_in_an_inline_handler_fails_the_whole_append(
    store: PostgresEventStore,
) -> None:
    await store.append("user-1", [Registered("user-1", "a@example.com")])
    with pytest.raises(UniqueViolation) as info:
        await store.append(
            "user-2", [Registered("user-2", "b@example.com"), Registered("user-2", "a@example.com")]
        )
    assert info.value.constraint == "emails_pkey"
    assert await store.read_stream("user-2") == []
    assert await store.head_position() == 1
    rows = await store.query(lambda tx: tx.fetchall("SELECT email, user_id FROM emails"))
    assert rows == [("a@example.com", "user-1")]
    # The stream is still usable, and the next event takes the next visible position.
    result = await store.append("user-2", [Registered("user-2", "b@example.com")])
    assert result.version == 1
    assert [r.stream_id for r in await store.read_all(1)] == ["user-2"]


@postgres
async def test_a_failing_append_never_affects_concurrent_ones(store: PostgresEventStore) -> None:
    await store.append("taken", [Registered("taken", "taken@example.com")])
    outcomes = await asyncio.gather(
        *(
            store.append(
                f"user-{i}",
                [Registered(f"user-{i}", "taken@example.com" if i % 3 == 0 else f"{i}@x.org")],
            )
            for i in range(60)
        ),
        return_exceptions=True,
    )
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [i for i in range(60) if i % 3 == 0]
    assert all(isinstance(outcomes[i], UniqueViolation) for i in failed)
    stored = {r.stream_id for r in await store.read_all(0)}
    assert stored == {"taken"} | {f"user-{i}" for i in range(60) if i % 3}
    count = await store.query(lambda tx: tx.fetchone("SELECT count(*) FROM emails"))
    assert count == (41,)


@postgres
async def test_appends_run_concurrently_not_one_at_a_time(store: PostgresEventStore) -> None:
    """Both appends' handlers wait at a two-party barrier inside their transactions: with
    writers serialised (a table lock), the first would time out waiting for the second."""
    first, second = await asyncio.gather(
        store.append("a", [Waited()]), store.append("b", [Waited()])
    )
    assert {first.position, second.position} == {1, 2}


@postgres
async def test_any_version_appends_to_one_stream_all_land(store: PostgresEventStore) -> None:
    results = await asyncio.gather(
        *(store.append("busy", [Registered("busy", f"{i}@x.org")]) for i in range(40))
    )
    assert sorted(r.version for r in results) == list(range(1, 41))
    assert [r.stream_version for r in await store.read_stream("busy")] == list(range(1, 41))


# -- visibility -----------------------------------------------------------------------------


@postgres
async def test_an_append_committed_behind_an_in_flight_append_waits_for_it(
    store: PostgresEventStore, barrier: threading.Barrier
) -> None:
    await store.append("a", [Registered("a", "a@x.org")])
    # Its inline handler holds the transaction open at the barrier, positions taken.
    slow = asyncio.create_task(store.append("slow", [Waited()]))
    for _ in range(500):
        if barrier.n_waiting == 1:
            break
        await asyncio.sleep(0.01)
    assert barrier.n_waiting == 1
    fast = await store.append("b", [Registered("b", "b@x.org")])
    # Committed, and readable by stream, yet not in the log: the in-flight append took
    # the position before it, and a reader passing over that hole would lose it for good.
    assert await store.read_stream("b") != []
    assert await store.head_position() == 1
    assert await store.read_all(1) == []
    assert not await store.wait_for_new_events(1, timeout=0.1)
    await asyncio.to_thread(barrier.wait, 10)  # let the slow append commit
    slow_result = await slow
    assert slow_result.position < fast.position
    assert await store.head_position() == fast.position
    assert [r.stream_id for r in await store.read_all(1)] == ["slow", "b"]


@postgres
async def test_transactions_that_cannot_append_do_not_hold_readers_back(
    store: PostgresEventStore, pg_url: str
) -> None:
    """A long write transaction elsewhere (here: same database, any table) has an id but
    not the append mark: it can never add an event below the head, so it is ignored."""
    with psycopg.connect(pg_url) as bystander:
        bystander.execute("SELECT pg_current_xact_id()")  # running, with an id
        result = await store.append("b", [Registered("b", "b@x.org")])
        assert await store.head_position() == result.position
        assert [r.position for r in await store.read_all(0)] == [result.position]
        # And it can no longer append: its id predates any position it could take.
        with pytest.raises(psycopg.errors.RaiseException, match="first write"):
            bystander.execute("SELECT cqrskit_allocate_positions(1)")


@postgres
async def test_wait_wakes_on_an_append_from_another_store(
    store: PostgresEventStore, pg_url: str
) -> None:
    """Another process's store is only reachable through LISTEN/NOTIFY (the poll fallback
    is set far beyond the test's deadline)."""
    other = await PostgresEventStore.open(pg_url, store.codec, poll_interval=60)
    try:
        await store.append("a", [Registered("a", "a@x.org")])
        waiter = asyncio.create_task(other.wait_for_new_events(1, timeout=30))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await store.append("b", [Registered("b", "b@x.org")])
        assert await asyncio.wait_for(waiter, 5)
    finally:
        await other.close()


@postgres
async def test_appends_notify_only_while_a_listener_listens(
    store: PostgresEventStore, pg_url: str
) -> None:
    """A notification costs a transaction: none is sent while no store listens. A raw
    LISTEN (no listener's lock) overhears what is sent."""
    with psycopg.connect(pg_url, autocommit=True) as overhearing:
        overhearing.execute(f"LISTEN {CHANNEL}")
        for stream in ("a", "b"):
            await store.append(stream, [Registered(stream, f"{stream}@x.org")])
            await asyncio.sleep(2 * RECHECK)  # past a look for listeners
        assert [n.payload for n in overhearing.notifies(timeout=0.3)] == []
        other = await PostgresEventStore.open(pg_url, store.codec, poll_interval=60)
        try:
            waiter = asyncio.create_task(other.wait_for_new_events(2, timeout=30))
            held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            held += " AND classid = %s AND objid = %s AND objsubid = 2 AND mode = 'ShareLock'"
            for _ in range(500):
                row = overhearing.execute(held, LISTENING).fetchone()
                if row == (1,):
                    break
                await asyncio.sleep(0.01)
            assert row == (1,), "the listener holds its lock"
            await asyncio.sleep(2 * RECHECK)  # the notifier looks again at the next append
            await store.append("c", [Registered("c", "c@x.org")])
            assert await asyncio.wait_for(waiter, 5)
            assert [n.payload for n in overhearing.notifies(timeout=1, stop_after=1)] == ["3"]
        finally:
            await other.close()


@postgres
async def test_a_failure_inside_the_allocation_leaves_no_lock_behind(
    store: PostgresEventStore, pg_url: str
) -> None:
    """The allocation takes a session lock; an error between taking and releasing it
    (here: the sequence exhausted) must not leave it held by a pooled session, or every
    later append would hang."""
    await store.append("a", [Registered("a", "a@x.org")])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT setval('cqrskit_events_position_seq', 9223372036854775807)")
        with pytest.raises(PersistenceError, match="maximum value"):
            await store.append("b", [Registered("b", "b@x.org")])
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        ).fetchone()
        assert held == (0,)
        conn.execute("SELECT setval('cqrskit_events_position_seq', 1)")
    results = await asyncio.wait_for(
        asyncio.gather(
            *(store.append(f"s-{i}", [Registered(f"s-{i}", f"{i}@x")]) for i in range(20))
        ),
        10,
    )
    assert sorted(r.position for r in results) == list(range(2, 22))


# -- errors ---------------------------------------------------------------------------------


@postgres
async def test_driver_errors_come_out_converted(store: PostgresEventStore) -> None:
    with pytest.raises(PersistenceError) as info:
        await store.query(lambda tx: tx.fetchall("SELEKT 1"))
    assert isinstance(info.value.__cause__, psycopg.errors.SyntaxError)
    with pytest.raises(PersistenceError):
        await store.query(lambda tx: tx.execute("INSERT INTO emails VALUES ('a', 'b')"))


@postgres
async def test_an_unreachable_server_is_an_operational_error() -> None:
    store = PostgresEventStore("postgresql://postgres@127.0.0.1:1/nowhere", Codec([Registered]))
    try:
        with pytest.raises(OperationalError):
            await store.head_position()
    finally:
        await store.close()


def test_placeholders_are_translated_outside_literals_only() -> None:
    assert translate_placeholders("SELECT ? , ?") == "SELECT %s , %s"
    assert translate_placeholders("SELECT '?', \"?\", ? -- ?\n") == ("SELECT '?', \"?\", %s -- ?\n")
    assert translate_placeholders("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"
    assert translate_placeholders(r"SELECT E'\' ?', ?") == r"SELECT E'\' ?', %s"
    assert translate_placeholders("SELECT $$ ? $$, $t$ ' ? $t$, ?") == (
        "SELECT $$ ? $$, $t$ ' ? $t$, %s"
    )
    assert translate_placeholders("SELECT /* ? /* ? */ ? */ ?") == "SELECT /* ? /* ? */ ? */ %s"
    assert translate_placeholders("SELECT 'a%' LIKE ?, 5 % 2") == "SELECT 'a%%' LIKE %s, 5 %% 2"


@postgres
async def test_percent_signs_and_question_marks_in_literals_reach_the_server(
    store: PostgresEventStore,
) -> None:
    row = await store.query(lambda tx: tx.fetchone("SELECT '50% ?', ?::int % 7", (23,)))
    assert row == ("50% ?", 2)


# -- migrations -----------------------------------------------------------------------------


@postgres
def test_migrations_apply_once_even_when_started_concurrently(pg_url: str) -> None:
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(apply(pg_url))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shipped = [f"{m.version:04d}_{m.name}.sql" for m in migrations()]
    assert sorted(results, key=len) == [[], [], [], shipped]
    assert apply(pg_url) == []
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM cqrskit_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == [m.version for m in migrations()]


@postgres
def test_a_database_migrated_by_newer_code_or_an_edited_migration_is_refused(pg_url: str) -> None:
    apply(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO cqrskit_migrations (version, name, checksum) VALUES (9999, 'x', '')"
        )
    with pytest.raises(SchemaError, match="9999"):
        apply(pg_url)
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM cqrskit_migrations WHERE version = 9999")
        conn.execute("UPDATE cqrskit_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(SchemaError, match="changed after it was applied"):
        apply(pg_url)


@postgres
async def test_read_log_refuses_a_transaction_wide_snapshot(
    store: PostgresEventStore, pg_url: str
) -> None:
    """cqrskit_read_log reads rows with a snapshot newer than its horizon: impossible when
    every query of the transaction shares one snapshot, so it refuses to run there."""
    appended = await store.append("a", [Registered("a", "a@x.org")])
    with psycopg.connect(pg_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.RaiseException, match="READ COMMITTED"):
            conn.execute("SELECT * FROM cqrskit_read_log(0, 10)")
        conn.rollback()
        rows = conn.execute("SELECT * FROM cqrskit_read_log(0, 10)").fetchall()
        assert [(r[0], r[1]) for r in rows] == [(appended.position, "a")]


@postgres
async def test_a_conflict_reports_the_actual_version_and_stores_nothing(
    store: PostgresEventStore,
) -> None:
    """The version check, allocation and insert are one statement: a failed check
    allocates no position and inserts no row."""
    await store.append("a", [Registered("a", "a@x.org")], NO_STREAM)
    with pytest.raises(ConcurrencyError) as caught:
        await store.append("a", [Registered("a", "b@x.org")], 5)
    assert caught.value.actual == 1
    later = await store.append("b", [Registered("b", "b@x.org")], NO_STREAM)
    assert later.position == 2  # no hole: the failed append took no position
    assert [r.position for r in await store.read_all(0)] == [1, 2]


@postgres
async def test_sealed_events_open_with_the_keys_kept_until_one_is_destroyed(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream read carries the count of destroyed keys: while it stays, the keys this
    store made or read open the events without a second query; a forget raises it, and
    the next read asks the database again (and opens nothing with the destroyed key)."""
    here = await PostgresEventStore.open(pg_url, personal_codec())
    elsewhere = await PostgresEventStore.open(pg_url, personal_codec())
    lookups: list[list[str]] = []
    lookup = here._lookup_keys_sync

    def counted(subjects: Collection[str]) -> dict[str, bytes | None]:
        lookups.append(sorted(subjects))
        return lookup(subjects)

    monkeypatch.setattr(here, "_lookup_keys_sync", counted)
    try:
        await here.append("member-1", [Joined("m-1", "ada@example.org", None)])
        await elsewhere.append("member-2", [Joined("m-2", "bob@example.org", None)])
        for _ in range(2):
            (one,) = await here.read_stream("member-1")  # made here: kept
            (two,) = await here.read_stream("member-2")  # looked up once, then kept
            assert here.codec.decode(one).email == "ada@example.org"
            assert here.codec.decode(two).email == "bob@example.org"
        assert lookups == [["m-2"]]
        await elsewhere.append("member-2", [Left("m-2")])  # destroys m-2's key
        (two, _) = await here.read_stream("member-2")
        (one,) = await here.read_stream("member-1")
        assert here.codec.decode(two).email == FORGOTTEN
        assert here.codec.decode(one).email == "ada@example.org"
        assert lookups == [["m-2"], ["m-2"], ["m-1"]]
    finally:
        await here.close()
        await elsewhere.close()


@postgres
async def test_a_failed_multi_statement_append_leaves_its_session_idle(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``append_streams`` runs BEGIN ... COMMIT itself: every way it can fail (a
    ``within`` that raises, a statement the server refuses inside the pipeline, a
    version conflict) ends the transaction before the session goes back to the pool, so
    the next call on it (one connection here) starts clean and the pool has nothing to
    roll back."""
    store = await PostgresEventStore.open(pg_url, Codec([Registered]), pool_min=1, pool_max=1)
    await store.query(lambda tx: None)  # migrations applied

    def create(tx: SqlTx, results: object) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS seen (k TEXT PRIMARY KEY)")
        tx.execute("INSERT INTO seen (k) VALUES ('a')")

    def raises(tx: SqlTx, results: object) -> None:
        raise RuntimeError("within failed")

    def duplicate(tx: SqlTx, results: object) -> None:
        tx.execute("INSERT INTO seen (k) VALUES ('a')")

    try:
        with caplog.at_level("WARNING"):
            await store.append_streams(
                [StreamAppend("a", [Registered("a", "a@x.org")])], within=create
            )
            with pytest.raises(RuntimeError, match="within failed"):
                await store.append_streams(
                    [StreamAppend("b", [Registered("b", "b@x.org")])], within=raises
                )
            with pytest.raises(UniqueViolation):
                await store.append_streams(
                    [StreamAppend("c", [Registered("c", "c@x.org")])], within=duplicate
                )
            with pytest.raises(ConcurrencyError):
                await store.append_streams([StreamAppend("a", [Registered("a", "x@x.org")], 0)])
            later = await store.append_streams([StreamAppend("d", [Registered("d", "d@x.org")])])
        assert [r.stream_id for r in await store.read_all(0)] == ["a", "d"]
        assert later[0].version == 1
        assert not [r for r in caplog.records if r.name.startswith("psycopg")]
    finally:
        await store.close()


@postgres
def test_forgets_of_overlapping_subjects_at_once_do_not_deadlock(pg_url: str) -> None:
    """One transaction forgets X then Y while another forgets Y: the count of destroyed
    keys is raised at COMMIT, after each holds its key rows, so the second commits, the
    first then takes Y, and both count (a count raised at each row made this a deadlock)."""
    apply(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO cqrskit_keys (subject, key) VALUES ('x', '\\x01'), ('y', '\\x02')"
        )
        (before,) = admin.execute("SELECT count FROM cqrskit_keys_destroyed").fetchone() or (0,)
    forget = "UPDATE cqrskit_keys SET key = NULL, forgotten_at = now() WHERE subject = %s"
    with psycopg.connect(pg_url) as first, psycopg.connect(pg_url) as second:
        for conn in (first, second):
            conn.execute("SET lock_timeout = '5s'")  # a wait that never ends fails the test
        first.execute(forget, ("x",))
        second.execute(forget, ("y",))
        failures: list[BaseException] = []

        def forget_y_then_commit() -> None:
            try:
                first.execute(forget, ("y",))  # waits for the second's commit
                first.commit()
            except BaseException as exc:
                failures.append(exc)

        waiter = threading.Thread(target=forget_y_then_commit)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # blocked on y's row, as it must be
        second.commit()
        waiter.join(10)
        assert not waiter.is_alive()
        assert failures == []
    with psycopg.connect(pg_url, autocommit=True) as admin:
        (after,) = admin.execute("SELECT count FROM cqrskit_keys_destroyed").fetchone() or (0,)
        keys = admin.execute("SELECT subject, key FROM cqrskit_keys ORDER BY 1").fetchall()
    assert after == before + 2
    assert keys == [("x", None), ("y", None)]
