"""The whole bank, opened from a URL on memory, SQLite and PostgreSQL: commands, read-your-
writes, version conflicts, transfers and their recovery, concurrency, reopening."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cqrskit import CommandResult, ConcurrencyError, ConfigurationError, StreamNotFound, new_id
from cqrskit.testing import CommandScenario
from examples.bank.app import (
    AccountView,
    Bank,
    CloseAccount,
    Deposit,
    GetAccount,
    ListAccounts,
    ListTransfers,
    OpenAccount,
    ResumeTransfers,
    Transfer,
    TransferView,
    Withdraw,
)
from examples.bank.domain import (
    Account,
    InsufficientFunds,
    TransferCompleted,
    TransferReceived,
    TransferSent,
)


async def open_with(bank: Bank, owner: str, cents: int = 0) -> str:
    account_id: str = (await bank.dispatch(OpenAccount(owner))).value
    if cents:
        await bank.dispatch(Deposit(account_id, cents))
    return account_id


async def view(bank: Bank, account_id: str, position: int | None = None) -> AccountView:
    """The account as the read model has it, once it has caught up with ``position``
    (the log's head when not given)."""
    if position is None:
        position = await bank.store.head_position()
    found = (await bank.ask(GetAccount(account_id), min_position=position)).value
    assert found is not None
    return found


async def test_a_client_reads_its_own_writes(bank: Bank) -> None:
    opened = await bank.dispatch(OpenAccount("Ada"))
    deposited = await bank.dispatch(Deposit(opened.value, 10_00))
    assert deposited.value == 2  # the account's version
    withdrawn = await bank.dispatch(Withdraw(opened.value, 3_00))
    assert withdrawn.position > deposited.position > opened.position
    answer = await bank.ask(GetAccount(opened.value), min_position=withdrawn.position)
    assert answer.value == AccountView(opened.value, "Ada", 7_00, 3, closed=False)
    assert answer.position >= withdrawn.position


async def test_a_stale_version_is_a_conflict_and_changes_nothing(bank: Bank) -> None:
    ada = await open_with(bank, "Ada", 10_00)
    seen = await view(bank, ada)
    first = await bank.dispatch(Withdraw(ada, 1_00, expected_version=seen.version))
    with pytest.raises(ConcurrencyError) as conflict:
        await bank.dispatch(Withdraw(ada, 1_00, expected_version=seen.version))
    assert (conflict.value.expected, conflict.value.actual) == (seen.version, first.value)
    with pytest.raises(ConcurrencyError):
        await bank.dispatch(CloseAccount(ada, expected_version=seen.version))
    assert (await view(bank, ada)).balance == 9_00


async def test_the_rules_refuse_and_nothing_is_recorded(bank: Bank) -> None:
    ada = await open_with(bank, "Ada", 5_00)
    head = await bank.store.head_position()
    with pytest.raises(InsufficientFunds):
        await bank.dispatch(Withdraw(ada, 5_01))
    with pytest.raises(StreamNotFound):
        await bank.dispatch(Deposit("no-such-account", 1))
    assert await bank.store.head_position() == head


async def test_an_emptied_account_closes(bank: Bank) -> None:
    ada = await open_with(bank, "Ada", 1_00)
    await bank.dispatch(Withdraw(ada, 1_00))
    closed = await bank.dispatch(CloseAccount(ada, expected_version=3))
    assert (await view(bank, ada, closed.position)).closed


async def test_a_transfer_moves_the_money_once(bank: Bank) -> None:
    ada, bob = await open_with(bank, "Ada", 10_00), await open_with(bank, "Bob")
    transfer = Transfer(new_id(), ada, bob, 4_00)
    done = await bank.dispatch(transfer)
    assert done.value == "completed"
    again = await bank.dispatch(transfer)  # the client's retry, with the same transfer id
    assert again.value == "completed"
    assert [(await view(bank, a, again.position)).balance for a in (ada, bob)] == [6_00, 4_00]
    listed = await bank.ask(ListTransfers(), min_position=again.position)
    assert listed.value == [TransferView(transfer.transfer_id, ada, bob, 4_00, "completed")]


async def test_a_transfer_to_a_closed_account_comes_back(bank: Bank) -> None:
    ada, bob = await open_with(bank, "Ada", 10_00), await open_with(bank, "Bob")
    await bank.dispatch(CloseAccount(bob))
    done = await bank.dispatch(Transfer(new_id(), ada, bob, 4_00))
    assert done.value == "returned"
    assert (await view(bank, ada, done.position)).balance == 10_00
    (returned,) = (await bank.ask(ListTransfers(), min_position=done.position)).value
    assert returned.state == "returned"
    with pytest.raises(StreamNotFound):  # no account at all: refused before anything moves
        await bank.dispatch(Transfer(new_id(), ada, "no-such-account", 1))


async def test_a_transfer_cut_short_by_a_crash_is_resumed(bank: Bank) -> None:
    ada, bob = await open_with(bank, "Ada", 10_00), await open_with(bank, "Bob")
    # Step 1 alone, as if the process died right after it: the money is in flight.
    accounts = bank.repository(Account)
    source = await accounts.get(ada)
    source.send_transfer("t1", bob, 4_00)
    await accounts.save(source)
    stuck = await view(bank, ada)
    assert stuck.balance == 6_00
    head = await bank.store.head_position()
    in_flight = await bank.ask(ListTransfers(in_flight_only=True), min_position=head)
    assert [t.state for t in in_flight.value] == ["sent"]

    resumed = await bank.dispatch(ResumeTransfers())
    assert resumed.value == 1
    assert (await view(bank, bob, resumed.position)).balance == 4_00
    assert (
        await bank.ask(ListTransfers(in_flight_only=True), min_position=resumed.position)
    ).value == []
    assert (await bank.dispatch(ResumeTransfers())).value == 0


async def test_concurrent_deposits_all_land_and_one_of_two_stale_withdrawals_wins(
    bank: Bank,
) -> None:
    ada = await open_with(bank, "Ada")
    # Four at once: a conflict is retried from a fresh load (retry_on_conflict), and each
    # conflict of one deposit is another's success, so none needs more than four attempts
    # (the bus makes five).
    await asyncio.gather(*(bank.dispatch(Deposit(ada, 1_00)) for _ in range(4)))
    seen = await view(bank, ada)
    assert (seen.balance, seen.version) == (4_00, 5)
    outcomes = await asyncio.gather(
        *(bank.dispatch(Withdraw(ada, 1_00, expected_version=5)) for _ in range(2)),
        return_exceptions=True,
    )
    # The loser sees a conflict: StaleVersion when it loaded after the winner's append,
    # a plain ConcurrencyError when both loaded first and the store refused its append.
    assert sum(isinstance(o, CommandResult) for o in outcomes) == 1
    assert sum(isinstance(o, ConcurrencyError) for o in outcomes) == 1
    assert (await view(bank, ada)).balance == 3_00


async def test_a_transfer_appends_one_event_per_step() -> None:
    # The test kit's CommandScenario on the app's own store and command bus (middleware
    # included). Not `async with`: the app closes its store itself.
    async with Bank() as bank:
        ada, bob = await open_with(bank, "Ada", 10_00), await open_with(bank, "Bob")
        scenario = CommandScenario(bank.store)
        outcome = await scenario.when(bank.commands, Transfer("t1", ada, bob, 4_00))
        assert outcome.value == "completed"
        scenario.then(
            TransferSent("t1", bob, 4_00), TransferCompleted("t1"), stream=f"account-{ada}"
        )
        scenario.then(TransferReceived("t1", ada, 4_00), stream=f"account-{bob}")


async def test_the_bank_reopens_on_its_files_and_rebuilds_a_lost_read_model(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}"
    async with Bank(url) as bank:
        ada = await open_with(bank, "Ada", 10_00)
    assert {"write.db", "read.db"} <= set(await asyncio.to_thread(os.listdir, tmp_path))
    async with Bank(url) as bank:
        assert (await view(bank, ada)).balance == 10_00
    # The read model is derived data: without read.db, opening replays the log into a new one.
    await asyncio.to_thread(os.remove, tmp_path / "read.db")
    async with Bank(url) as bank:
        accounts = await bank.ask(ListAccounts(), min_position=await bank.store.head_position())
        assert [(a.owner, a.balance) for a in accounts.value] == [("Ada", 10_00)]


async def test_the_module_app_opens_nothing_until_asked() -> None:
    from examples.bank.app import app

    with pytest.raises(ConfigurationError, match="not open"):
        _ = app.store
