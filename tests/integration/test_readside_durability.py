"""The read database's durability: relaxed by default (its commits do not wait for the
disk), strict on request, the event store synchronous either way; and what makes relaxed
safe, shown with real processes: a read model that loses its last commits steps back whole
(rows and checkpoint together) and re-applies from its older checkpoint, never twice.

- SIGKILL mid-catch-up, on SQLite and PostgreSQL: every event applied exactly once (the
  ledger's primary key per event would stop the projection on a second application).
- SQLite, what a power loss can leave: the read database's WAL with its tail missing
  (with ``synchronous=NORMAL`` the WAL is not fsynced at commit, so its unsynced tail may
  be lost or torn; SQLite's chained frame checksums make a torn tail the same as a cut
  one). It is simulated on the files, after a SIGKILL: Python's ``sqlite3`` cannot
  register a fault-injecting VFS, so the power loss itself is not. The PostgreSQL server's
  unclean stop is real: ``test_readside_durability_pg_restart.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from cqrskit import Event, Options, Projection, RecordedEvent, SqlTx, handles
from cqrskit.backends.postgres import PostgresDatabase
from cqrskit.backends.sqlite import SqliteDatabase
from cqrskit.connect import Backend, ReadDurability, open_url
from cqrskit.errors import ConfigurationError
from cqrskit.readside import ReadDatabase
from tests.integration import _readside_durability_child as child
from tests.integration._kills import kill_after_progress
from tests.integration._projection_child import (
    Incremented,
    append_all,
    counters_codec,
    random_events,
)
from tests.integration._readside_durability_child import (
    LEDGER,
    Ledger,
    durability_setting,
    expected,
    open_backend,
    read_ledger,
)

ROOT = Path(__file__).resolve().parents[2]


class SeenByAppends(Projection):
    """An inline (write-model) projection that records what the event store's append
    transactions run with."""

    name = "seen_by_appends"
    backend = "sqlite"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @handles(Incremented)
    def on_incremented(self, tx: SqlTx, event: Incremented, record: RecordedEvent) -> None:
        self.seen.append(durability_setting(tx, self.backend))


async def opened(
    url: str, durability: ReadDurability | None, kind: str
) -> tuple[Backend, SeenByAppends]:
    seen = SeenByAppends()
    seen.backend = kind
    options = Options() if durability is None else Options(read_durability=durability)
    backend = await open_url(url, counters_codec(), [seen], options=options)
    return backend, seen


async def close(backend: Backend) -> None:
    await backend.db.close()
    await backend.store.close()


def test_options_refuse_an_unknown_durability() -> None:
    with pytest.raises(ConfigurationError, match="'relaxed', 'strict'"):
        Options(read_durability="fast")  # type: ignore[arg-type]
    assert Options().read_durability == "relaxed"


@pytest.mark.parametrize(
    ("durability", "pragma"), [(None, "synchronous=1"), ("strict", "synchronous=2")]
)
async def test_sqlite_read_database_is_normal_by_default_full_when_strict(
    tmp_path: Path, durability: ReadDurability | None, pragma: str
) -> None:
    """NORMAL (1) by default, FULL (2) when strict; the event store FULL (2) either way."""
    backend, seen = await opened(f"sqlite:///{tmp_path / 'data'}", durability, "sqlite")
    try:
        await backend.store.append("c-1", [Incremented("c", 1)])
        assert await backend.db.write(lambda tx: durability_setting(tx, "sqlite")) == pragma
        assert seen.seen == ["synchronous=2"]
    finally:
        await close(backend)
    db = SqliteDatabase(tmp_path / "other.db", durability="strict", synchronous="OFF")
    try:  # an explicit PRAGMA wins (a rebuild file's OFF)
        assert await db.write(lambda tx: durability_setting(tx, "sqlite")) == "synchronous=0"
    finally:
        await db.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("durability", "setting"),
    [(None, "synchronous_commit=off"), ("strict", "synchronous_commit=on")],
)
async def test_pg_read_transactions_commit_asynchronously_by_default_only_them(
    pg_url: str, durability: ReadDurability | None, setting: str
) -> None:
    """Off in the read database's write transactions by default, on when strict; never in
    the event store's appends (same database here), never outside the transaction."""
    backend, seen = await opened(pg_url, durability, "postgresql")
    try:
        await backend.store.append("c-1", [Incremented("c", 1)])
        db = backend.db
        assert isinstance(db, PostgresDatabase)
        assert await db.write(lambda tx: durability_setting(tx, "postgresql")) == setting
        assert await db.write(lambda tx: durability_setting(tx, "postgresql"), pipeline=True) == (
            setting
        )
        # Every pooled connection back to the server's setting afterwards.
        for _ in range(db.max_connections):
            with db.connection() as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert seen.seen == ["synchronous_commit=on"]
        # A handler's failure rolls back what it did (BEGIN was sent with the SET LOCAL).
        await db.write(lambda tx: tx.execute("CREATE TABLE t (k TEXT PRIMARY KEY)"))
        with pytest.raises(ZeroDivisionError):
            await db.write(lambda tx: (tx.execute("INSERT INTO t VALUES ('a')"), 1 / 0))
        assert await db.read(lambda tx: tx.fetchall("SELECT k FROM t")) == []
        # A rebuild's batches never wait, whatever the live database's durability.
        target = await db.open_rebuild(Ledger())
        try:
            assert await target.write(lambda tx: durability_setting(tx, "postgresql")) == (
                "synchronous_commit=off"
            )
        finally:
            await target.discard()
    finally:
        await close(backend)


# -- crashes of real processes ----------------------------------------------------------------

EVENTS = 20_000
KILLS = 12


async def spawn(
    backend: str, events: str, read: str, batch_size: int, durability: str = "relaxed"
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        child.__name__,
        backend,
        events,
        read,
        str(batch_size),
        durability,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )


async def started(process: asyncio.subprocess.Process) -> str:
    """The setting line the child prints, once it has printed ``started`` after it."""
    assert process.stdout is not None
    setting = await asyncio.wait_for(process.stdout.readline(), 30)
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line == b"started\n", (setting, line)
    return setting.decode().strip()


async def run_to_the_end(backend: str, events: str, read: str) -> None:
    process = await spawn(backend, events, read, 500)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, out
    assert out.splitlines()[-1] == b"done", out


async def checkpoint(db: ReadDatabase) -> tuple[int, str]:
    def read(tx: SqlTx) -> tuple[int, str]:
        try:
            row = tx.fetchone(
                "SELECT position, state FROM cqrskit_projections WHERE name = ?", (LEDGER,)
            )
        except Exception:  # killed before the table was first created
            return 0, "none"
        return (0, "none") if row is None else (int(row[0]), str(row[1]))

    return await db.read(read)


async def position(db: ReadDatabase) -> int:
    return (await checkpoint(db))[0]


async def live_position(read_db: Path) -> int:
    """The ledger's checkpoint while the child runs. Read-only: this connection never
    checkpoints the WAL (and the child holds the files open, so it is never the last)."""
    conn = sqlite3.connect(f"file:{read_db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT position FROM cqrskit_projections WHERE name = ?", (LEDGER,)
        ).fetchone()
    except sqlite3.OperationalError:  # before the table was first created
        return 0
    finally:
        conn.close()
    return 0 if row is None else int(row[0])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def locations(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(backend, where the events are, where the read models are)."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "write.db"), str(tmp_path / "read.db")
    write, read = request.getfixturevalue("pg_url_pair")
    return "postgresql", write, read


@pytest.fixture
async def seeded(locations: tuple[str, str, str]) -> list[Event]:
    backend, events_at, read_at = locations
    events = random_events(EVENTS, seed=15)
    store, db = await open_backend(backend, events_at, read_at, "strict")
    try:
        assert await append_all(store, events, chunk=200) == EVENTS
    finally:
        await db.close()
        await store.close()
    return events


async def check_applied_once(
    backend: str, events_at: str, read_at: str, events: Sequence[Event]
) -> None:
    """Every handled event in the ledger once, the totals those of a plain replay, the
    checkpoint at the head and not in error."""
    store, db = await open_backend(backend, events_at, read_at, "strict")
    try:
        assert await read_ledger(db) == expected(events)
        assert await checkpoint(db) == (EVENTS, "stopped")
    finally:
        await db.close()
        await store.close()


@pytest.mark.slow
async def test_sigkill_mid_catch_up_applies_every_event_exactly_once(
    locations: tuple[str, str, str], seeded: list[Event]
) -> None:
    backend, events_at, read_at = locations
    _, db = await open_backend(backend, events_at, read_at, "strict")
    rng = random.Random(1515)
    killed_at: list[int] = []
    try:
        for _ in range(KILLS):
            # Small batches (many commits) so that kills land in every phase of a batch.
            process = await spawn(backend, events_at, read_at, rng.choice([2, 3, 5]))
            setting = await started(process)
            assert setting in ("synchronous=1", "synchronous_commit=off"), setting
            # At most EVENTS / (2 * KILLS) a run: every kill lands before the end.
            progress = rng.randint(0, EVENTS // (2 * KILLS))
            await kill_after_progress(
                process, lambda: position(db), progress, rng.uniform(0, 0.005)
            )
            await process.communicate()
            assert process.returncode == -signal.SIGKILL, "the child finished before its kill"
            killed_at.append((await checkpoint(db))[0])
    finally:
        await db.close()
    # The kills hit the catch-up at many points, and progress was kept across them.
    assert len(set(killed_at)) >= KILLS // 2, killed_at
    assert killed_at == sorted(killed_at)
    assert 0 < killed_at[-1] < EVENTS, killed_at

    await run_to_the_end(backend, events_at, read_at)
    await check_applied_once(backend, events_at, read_at, seeded)


# -- SQLite: the read database's WAL loses its tail -------------------------------------------

WAL_HEADER = 32
FRAME_HEADER = 24


def commit_ends(wal: Path) -> list[int]:
    """The offsets where the WAL's commit frames end, in order, for the frames of its
    current generation (the salt of its header; a WAL restarted after a checkpoint keeps
    older frames beyond them, which SQLite ignores)."""
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    ends: list[int] = []
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        header = data[offset : offset + FRAME_HEADER]
        if header[8:16] != salts:
            break
        offset += FRAME_HEADER + page_size
        if int.from_bytes(header[4:8], "big"):  # "database size after commit": a commit
            ends.append(offset)
    return ends


def cut_wal_tail(read_db: Path, rng: random.Random) -> int:
    """Drop the last few transactions of ``read_db``'s WAL as a power loss with
    ``synchronous=NORMAL`` may: the WAL is cut at a random byte after the end of a commit
    some transactions back (often mid-frame: a torn write), and its index (``-shm``, rebuilt
    from the WAL by the next open) deleted. No connection may be open. Returns how many
    commits were dropped."""
    wal = Path(f"{read_db}-wal")
    ends = commit_ends(wal)
    dropped = rng.randint(1, min(40, len(ends)))
    keep_to = ends[-dropped - 1] if dropped < len(ends) else WAL_HEADER
    with open(wal, "r+b") as f:
        f.truncate(rng.randrange(keep_to, ends[-dropped]))
    Path(f"{read_db}-shm").unlink(missing_ok=True)
    return dropped


def peek_checkpoint(read_db: Path, scratch: Path) -> int:
    """The ledger's checkpoint, read from a copy of the files: a connection to the files
    themselves would move the WAL into the database when it closes."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "peek.db"
    for suffix in ("", "-wal"):
        Path(f"{copy}{suffix}").write_bytes(Path(f"{read_db}{suffix}").read_bytes())
    Path(f"{copy}-shm").unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        row = conn.execute(
            "SELECT position FROM cqrskit_projections WHERE name = ?", (LEDGER,)
        ).fetchone()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return 0 if row is None else int(row[0])


@pytest.mark.slow
async def test_sqlite_lost_wal_tail_steps_back_whole_and_reapplies_once(
    tmp_path: Path,
) -> None:
    """After each SIGKILL the read database's WAL loses its last transactions: the read
    model steps back to an older checkpoint with exactly the rows of the events up to it,
    and the next run re-applies from there. At the end every event is applied once."""
    events_at, read_at = tmp_path / "write.db", tmp_path / "read.db"
    events = random_events(EVENTS, seed=16)
    store, db = await open_backend("sqlite", str(events_at), str(read_at), "strict")
    assert await append_all(store, events, chunk=200) == EVENTS
    await db.close()
    await store.close()
    positions, _ = expected(events)

    rng = random.Random(1616)
    steps: list[tuple[int, int, int]] = []
    for _ in range(6):
        process = await spawn("sqlite", str(events_at), str(read_at), rng.choice([2, 3, 5]))
        assert await started(process) == "synchronous=1"
        # At least one commit of its own in the WAL to cut; six runs end before the log does.
        progress = rng.randint(1, EVENTS // 12)
        await kill_after_progress(
            process, lambda: live_position(read_at), progress, rng.uniform(0, 0.005)
        )
        await process.communicate()
        assert process.returncode == -signal.SIGKILL, "the child finished before its kill"
        before = peek_checkpoint(read_at, tmp_path / "peek")
        dropped = cut_wal_tail(read_at, rng)
        db = SqliteDatabase(read_at, durability="strict")  # checks every page at open
        try:
            after, _ = await checkpoint(db)
            rows, _ = await read_ledger(db)
        finally:
            await db.close()
        steps.append((before, after, dropped))
        assert after <= before
        # Stepped back whole: the rows are exactly those of the events up to the checkpoint.
        assert rows == [p for p in positions if p <= after]
    assert sum(after < before for before, after, _ in steps) >= 3, steps

    await run_to_the_end("sqlite", str(events_at), str(read_at))
    await check_applied_once("sqlite", str(events_at), str(read_at), events)
    print(f"\nsqlite WAL tail cut (checkpoint before, after, commits dropped): {steps}")


def test_social_read_durability_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cqrskit import ConfigurationError
    from social.infrastructure.settings import Settings

    monkeypatch.delenv("SOCIAL_READ_DURABILITY", raising=False)
    assert Settings.from_env().read_durability == "relaxed"
    monkeypatch.setenv("SOCIAL_READ_DURABILITY", "strict")
    assert Settings.from_env().read_durability == "strict"
    monkeypatch.setenv("SOCIAL_READ_DURABILITY", "fast")
    with pytest.raises(ConfigurationError, match="SOCIAL_READ_DURABILITY"):
        Settings.from_env()
