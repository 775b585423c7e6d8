"""Property: whatever the commands, the live read model equals the rebuilt one (and the model).

A small accounts domain (open, deposit, withdraw, rename) projected into two tables. The
runner follows while the commands' events are appended in random chunks with random
batch sizes; then a rebuild from position 0 is swapped in. Both read models must equal
what a plain Python model of the domain says.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cqrskit import Codec, Event, Projection, RecordedEvent, SqlTx, handles
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from cqrskit.rebuild import rebuild
from cqrskit.runner import ProjectionRunner


@dataclass(frozen=True)
class Opened(Event):
    account: str
    owner: str


@dataclass(frozen=True)
class Deposited(Event):
    account: str
    amount: int


@dataclass(frozen=True)
class Withdrawn(Event):
    account: str
    amount: int


@dataclass(frozen=True)
class Renamed(Event):
    account: str
    owner: str


@dataclass(frozen=True)
class Audited(Event):
    """No projection handles it: skipped."""

    account: str


class Accounts(Projection):
    name = "accounts"
    tables = ("accounts", "owners")

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
            " balance INTEGER NOT NULL, operations INTEGER NOT NULL)"
        )
        tx.execute("CREATE INDEX IF NOT EXISTS accounts_by_owner ON accounts (owner)")
        tx.execute(
            "CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, accounts INTEGER NOT NULL)"
        )

    def _own(self, tx: SqlTx, owner: str, delta: int) -> None:
        tx.execute(
            "INSERT INTO owners (owner, accounts) VALUES (?, ?) ON CONFLICT (owner)"
            " DO UPDATE SET accounts = accounts + excluded.accounts",
            (owner, delta),
        )
        tx.execute("DELETE FROM owners WHERE owner = ? AND accounts = 0", (owner,))

    @handles(Opened)
    def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
        tx.execute("INSERT INTO accounts VALUES (?, ?, 0, 0)", (event.account, event.owner))
        self._own(tx, event.owner, 1)

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        tx.execute(
            "UPDATE accounts SET balance = balance + ?, operations = operations + 1 WHERE id = ?",
            (event.amount, event.account),
        )

    @handles(Withdrawn)
    def on_withdrawn(self, tx: SqlTx, event: Withdrawn, record: RecordedEvent) -> None:
        tx.execute(
            "UPDATE accounts SET balance = balance - ?, operations = operations + 1 WHERE id = ?",
            (event.amount, event.account),
        )

    @handles(Renamed)
    def on_renamed(self, tx: SqlTx, event: Renamed, record: RecordedEvent) -> None:
        (old,) = tx.fetchone("SELECT owner FROM accounts WHERE id = ?", (event.account,)) or ("",)
        tx.execute("UPDATE accounts SET owner = ? WHERE id = ?", (event.owner, event.account))
        self._own(tx, old, -1)
        self._own(tx, event.owner, 1)


Model = tuple[list[tuple[str, str, int, int]], list[tuple[str, int]]]

commands = st.lists(
    st.tuples(
        st.sampled_from(["open", "deposit", "withdraw", "rename", "audit"]),
        st.integers(0, 5),  # account
        st.integers(1, 50),  # amount
        st.sampled_from(["ann", "bob", "cy"]),  # owner
    ),
    max_size=120,
)


@dataclass
class Account:
    owner: str
    balance: int = 0
    operations: int = 0


def decide(cmds: list[tuple[str, int, int, str]]) -> tuple[list[tuple[str, Event]], Model]:
    """The domain's decisions (invalid commands are refused) and the expected read model."""
    accounts: dict[str, Account] = {}
    decided: list[tuple[str, Event]] = []
    for kind, n, amount, owner in cmds:
        account = f"acc-{n}"
        state = accounts.get(account)
        event: Event | None = None
        if state is None:
            if kind == "open":
                event = Opened(account, owner)
                accounts[account] = Account(owner)
        elif kind == "deposit":
            event = Deposited(account, amount)
            state.balance += amount
            state.operations += 1
        elif kind == "withdraw" and state.balance >= amount:
            event = Withdrawn(account, amount)
            state.balance -= amount
            state.operations += 1
        elif kind == "rename":
            event = Renamed(account, owner)
            state.owner = owner
        elif kind == "audit":
            event = Audited(account)
        if event is not None:
            decided.append((account, event))
    rows = sorted((a, s.owner, s.balance, s.operations) for a, s in accounts.items())
    owners: dict[str, int] = {}
    for _, owner, _, _ in rows:
        owners[owner] = owners.get(owner, 0) + 1
    return decided, (rows, sorted(owners.items()))


async def read_model(db: SqliteDatabase) -> Model:
    def read(tx: SqlTx) -> Model:
        accounts = tx.fetchall("SELECT id, owner, balance, operations FROM accounts ORDER BY id")
        owners = tx.fetchall("SELECT owner, accounts FROM owners ORDER BY owner")
        return [(r[0], r[1], r[2], r[3]) for r in accounts], [(r[0], r[1]) for r in owners]

    return await db.read(read)


async def scenario(
    decided: list[tuple[str, Event]], chunks: list[int], batch_size: int, rebuild_batch: int
) -> tuple[Model, Model]:
    codec = Codec([Opened, Deposited, Withdrawn, Renamed, Audited])
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteEventStore.open(Path(tmp) / "w.db", codec, synchronous="OFF")
        db = SqliteDatabase(Path(tmp) / "r.db", synchronous="OFF")
        try:
            runner = ProjectionRunner(store, db, [Accounts()], batch_size=batch_size)
            async with runner:
                i = 0
                for size in [*chunks, len(decided)]:  # the runner follows as they arrive
                    for account, event in decided[i : i + size]:
                        await store.append(account, [event])
                    i += size
                    await asyncio.sleep(0)
                head = await store.head_position()
                await runner.wait_for("accounts", head, timeout=20)
                live = await read_model(db)
                result = await rebuild(store, db, Accounts(), batch_size=rebuild_batch)
                assert result.position == head
                rebuilt = await read_model(db)
        finally:
            await db.close()
            await store.close()
    return live, rebuilt


@settings(max_examples=30, deadline=None)
@given(
    cmds=commands,
    chunks=st.lists(st.integers(1, 15), max_size=8),
    batch_size=st.integers(1, 20),
    rebuild_batch=st.integers(1, 50),
)
def test_live_read_model_equals_the_rebuilt_one(
    cmds: list[tuple[str, int, int, str]], chunks: list[int], batch_size: int, rebuild_batch: int
) -> None:
    decided, expected = decide(cmds)
    live, rebuilt = asyncio.run(scenario(decided, chunks, batch_size, rebuild_batch))
    assert live == expected
    assert rebuilt == expected
