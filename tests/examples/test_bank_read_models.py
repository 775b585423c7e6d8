"""The bank's read models and queries: given events, then these rows and these answers, on
an in-memory read database (the same SQL runs on SQLite and PostgreSQL in test_bank_app)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cqrskit import Codec, SqlTx
from cqrskit.backends.memory import MemoryDatabase
from cqrskit.testing import ProjectionScenario
from examples.bank.app import (
    AccountView,
    Balances,
    Bank,
    GetAccount,
    ListAccounts,
    ListTransfers,
    Transfers,
    TransferView,
)
from examples.bank.domain import (
    ALL_EVENTS,
    AccountClosed,
    AccountOpened,
    Deposited,
    TransferCompleted,
    TransferReceived,
    TransferReturned,
    TransferSent,
    Withdrawn,
)

CODEC = Codec(ALL_EVENTS)


@pytest.fixture
async def balances() -> AsyncIterator[ProjectionScenario]:
    async with ProjectionScenario(Balances(), CODEC, MemoryDatabase()) as scenario:
        yield scenario


@pytest.fixture
async def transfers() -> AsyncIterator[ProjectionScenario]:
    async with ProjectionScenario(Transfers(), CODEC, MemoryDatabase()) as scenario:
        yield scenario


async def test_balances_follow_every_movement_and_the_version(
    balances: ProjectionScenario,
) -> None:
    await balances.given(
        AccountOpened("Ada"), Deposited(10_00), Withdrawn(2_00), stream="account-a"
    )
    await balances.given(AccountOpened("Bob"), stream="account-b")
    await balances.given(TransferSent("t1", "b", 3_00), stream="account-a")
    await balances.given(TransferReceived("t1", "a", 3_00), stream="account-b")
    await balances.given(TransferCompleted("t1"), stream="account-a")
    await balances.then_rows(
        "SELECT id, owner, balance, version, closed FROM balances ORDER BY id",
        ("a", "Ada", 5_00, 5, 0),
        ("b", "Bob", 3_00, 2, 0),
    )
    await balances.given(
        TransferSent("t2", "b", 5_00), TransferReturned("t2", 5_00, "closed"), stream="account-a"
    )
    await balances.given(Withdrawn(3_00), AccountClosed(), stream="account-b")
    await balances.then_rows(
        "SELECT id, balance, version, closed FROM balances ORDER BY id",
        ("a", 5_00, 7, 0),
        ("b", 0, 4, 1),
    )


async def test_the_queries_answer_views_at_the_checkpoint(balances: ProjectionScenario) -> None:
    bank = Bank()  # never opened: its query handlers only need a read transaction
    position = await balances.given(AccountOpened("Ada"), Deposited(7_00), stream="account-a")

    def ask(tx: SqlTx) -> tuple[AccountView | None, AccountView | None, list[AccountView]]:
        return (
            bank.get_account(GetAccount("a"), tx),
            bank.get_account(GetAccount("nobody"), tx),
            bank.list_accounts(ListAccounts(), tx),
        )

    found, missing, listed = await balances.read(ask)
    assert found == AccountView("a", "Ada", 7_00, 2, closed=False)
    assert missing is None
    assert listed == [found]
    assert position == 2


async def test_transfers_are_tracked_until_settled(transfers: ProjectionScenario) -> None:
    await transfers.given(
        TransferSent("t1", "b", 1_00), TransferSent("t2", "c", 2_00), stream="account-a"
    )
    await transfers.given(TransferReceived("t1", "a", 1_00), stream="account-b")
    bank = Bank()

    def in_flight(tx: SqlTx) -> list[TransferView]:
        return bank.list_transfers(ListTransfers(in_flight_only=True), tx)

    assert await transfers.read(in_flight) == [
        TransferView("t1", "a", "b", 1_00, "received"),
        TransferView("t2", "a", "c", 2_00, "sent"),
    ]
    await transfers.given(
        TransferCompleted("t1"), TransferReturned("t2", 2_00, "closed"), stream="account-a"
    )
    assert await transfers.read(in_flight) == []
    await transfers.then_rows(
        "SELECT id, state FROM transfers ORDER BY id", ("t1", "completed"), ("t2", "returned")
    )
