"""The test kit (cqrskit.testing): each scenario passes when it should, and each ``then``
fails with an AssertionError that shows expected against actual when it should."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from unittest.mock import ANY

import pytest

from cqrskit import (
    Aggregate,
    Codec,
    Command,
    CommandBus,
    ConcurrencyError,
    Event,
    EventStore,
    Projection,
    QueryResult,
    ReadDatabase,
    RecordedEvent,
    Repository,
    SqlTx,
    handles,
    read_position,
)
from cqrskit.backends.memory import MemoryDatabase, MemoryEventStore
from cqrskit.testing import DEFAULT_STREAM, CommandScenario, ProjectionScenario, given

# -- a small domain -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deposited(Event):
    account: str
    amount: int


@dataclass(frozen=True)
class Withdrawn(Event):
    account: str
    amount: int


@dataclass(frozen=True)
class Credited(Event):
    """Version 2: version 1 held ``amount`` in units, version 2 holds ``cents``."""

    __schema_version__ = 2
    account: str
    cents: int


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    @classmethod
    def open(cls, id: str, amount: int) -> Account:
        account = cls(id)
        account.deposit(amount)
        return account

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.record(Deposited(self.id, amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"balance {self.balance} is below {amount}")
        self.record(Withdrawn(self.id, amount))

    def withdraw_badly(self, amount: int) -> None:
        """A bug: records, then refuses."""
        self.record(Withdrawn(self.id, amount))
        raise InsufficientFunds("too late")

    def apply(self, event: Event) -> None:
        match event:
            case Deposited(amount=amount):
                self.balance += amount
            case Withdrawn(amount=amount):
                self.balance -= amount
            case _:
                super().apply(event)


class Other(Aggregate):
    pass


def codec() -> Codec:
    kit_codec = Codec([Deposited, Withdrawn, Credited])

    @kit_codec.upcaster("Credited", 1)
    def to_cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"account": data["account"], "cents": data.pop("amount") * 100}

    return kit_codec


# -- aggregates ---------------------------------------------------------------------------------


def test_then_passes_on_the_recorded_events_and_returns_the_aggregate() -> None:
    account = (
        given(Account, Deposited("a", 10), id="a")
        .when(lambda a: a.withdraw(4))
        .then(Withdrawn("a", 4))
    )
    assert account.balance == 6
    assert account.version == 2
    assert account.committed_version == 1  # the given events count as stored


def test_given_takes_an_instance_and_when_can_be_called_in_turn() -> None:
    scenario = given(Account("b"), Deposited("b", 3))
    scenario.when(lambda a: a.deposit(1)).when(lambda a: a.withdraw(4))
    assert scenario.then(Deposited("b", 1), Withdrawn("b", 4)).balance == 0
    assert scenario.recorded == [Deposited("b", 1), Withdrawn("b", 4)]


def test_a_when_returning_a_new_aggregate_makes_it_the_one_under_test() -> None:
    opened = given(Account).when(lambda _: Account.open("c", 5)).then(Deposited("c", 5))
    assert opened.id == "c"
    with pytest.raises(TypeError, match="returned Other, which is not an instance of Account"):
        given(Account).when(lambda _: Other("x"))


def test_then_fails_on_other_events_and_names_the_differing_field() -> None:
    scenario = given(Account, Deposited("a", 10), id="a").when(lambda a: a.withdraw(5))
    with pytest.raises(AssertionError) as info:
        scenario.then(Withdrawn("a", 6))
    message = str(info.value)
    assert "recorded events differ" in message
    assert "expected 1:\n  1. Withdrawn(account='a', amount=6)" in message
    assert "actual 1:\n  1. Withdrawn(account='a', amount=5)" in message
    assert "first difference at #1:\n    amount: expected 6, actual 5" in message


def test_then_fails_on_missing_extra_or_other_types_of_events() -> None:
    scenario = given(Account, id="a").when(lambda a: a.deposit(5))
    with pytest.raises(AssertionError, match="1 unexpected at the end"):
        scenario.then()
    with pytest.raises(AssertionError, match="1 missing at the end"):
        scenario.then(Deposited("a", 5), Deposited("a", 5))
    with pytest.raises(AssertionError, match="expected a Withdrawn, actual a Deposited"):
        scenario.then(Withdrawn("a", 5))
    with pytest.raises(AssertionError, match="recorded events differ"):
        scenario.then_nothing()


def test_any_stands_for_a_value_the_test_cannot_know() -> None:
    given(Account, id="a").when(lambda a: a.deposit(5)).then(Deposited(ANY, 5))
    with pytest.raises(AssertionError):
        given(Account, id="a").when(lambda a: a.deposit(5)).then(Deposited(ANY, 6))


def test_then_fails_when_the_decision_raised_and_chains_its_error() -> None:
    scenario = given(Account, id="a").when(lambda a: a.withdraw(1))
    with pytest.raises(AssertionError, match="raised InsufficientFunds: balance 0") as info:
        scenario.then(Withdrawn("a", 1))
    assert isinstance(info.value.__cause__, InsufficientFunds)
    with pytest.raises(AssertionError, match="raised InsufficientFunds"):
        scenario.then_nothing()
    with pytest.raises(AssertionError, match="an earlier when raised InsufficientFunds"):
        scenario.when(lambda a: a.deposit(1))


def test_then_raises_returns_the_error_and_checks_type_message_and_that_nothing_was_recorded() -> (
    None
):
    scenario = given(Account, Deposited("a", 3), id="a").when(lambda a: a.withdraw(4))
    error = scenario.then_raises(InsufficientFunds, match=r"below \d")
    assert str(error) == "balance 3 is below 4"
    assert scenario.then_raises(Exception) is error  # a base class matches too
    with pytest.raises(AssertionError, match="expected ValueError, but the decision raised"):
        scenario.then_raises(ValueError)
    with pytest.raises(AssertionError, match="does not match 'above'"):
        scenario.then_raises(InsufficientFunds, match="above")
    with pytest.raises(AssertionError, match="expected InsufficientFunds, but the decision raised"):
        given(Account, Deposited("a", 9)).when(lambda a: a.withdraw(4)).then_raises(
            InsufficientFunds
        )
    with pytest.raises(AssertionError, match="but recorded events before it") as info:
        given(Account, Deposited("a", 9)).when(lambda a: a.withdraw_badly(4)).then_raises(
            InsufficientFunds
        )
    assert "Withdrawn(account='test', amount=4)" in str(info.value)


def test_then_state_checks_the_aggregate_after() -> None:
    scenario = given(Account, Deposited("a", 3)).when(lambda a: a.deposit(2))
    assert scenario.then_state(lambda a: a.balance == 5) is scenario.aggregate
    with pytest.raises(AssertionError, match=r"state check is false.*'balance': 5"):
        scenario.then_state(lambda a: a.balance == 6)
    with pytest.raises(AssertionError, match="raised ValueError"):
        given(Account).when(lambda a: a.deposit(0)).then_state(lambda a: True)


# -- command handlers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Deposit(Command):
    account: str
    amount: int


@dataclass(frozen=True)
class Transfer(Command):
    source: str
    target: str
    amount: int


class Handlers:
    def __init__(self, store: EventStore) -> None:
        self.accounts = Repository.for_type(store, Account)

    async def deposit(self, cmd: Deposit) -> int:
        account = await self.accounts.load(cmd.account)
        account.deposit(cmd.amount)
        await self.accounts.save(account)
        return account.balance

    async def transfer(self, cmd: Transfer) -> None:
        """Two appends, not atomic: a failing target leaves the source debited (a bug)."""
        source = await self.accounts.load(cmd.source)
        source.withdraw(cmd.amount)
        await self.accounts.save(source)
        target = await self.accounts.load(cmd.target)
        target.deposit(cmd.amount)
        await self.accounts.save(target)


@pytest.fixture
async def commands() -> AsyncIterator[CommandScenario]:
    async with CommandScenario(MemoryEventStore(codec())) as scenario:
        yield scenario


async def test_a_command_scenario_runs_the_handler_against_the_history(
    commands: CommandScenario,
) -> None:
    assert isinstance(commands.store, MemoryEventStore)
    handlers = Handlers(commands.store)
    stored = await commands.given(Account.stream_id("a"), Deposited("a", 10))
    assert stored.position == 1
    outcome = await commands.when(handlers.deposit, Deposit("a", 5))
    assert outcome.value == 15
    assert outcome.position == 2
    assert outcome.error is None
    commands.then(Deposited("a", 5), stream="account-a")
    commands.then(Deposited("a", 5))
    commands.then(stream="account-b")  # nothing appended there
    assert [r.stream_version for r in commands.new_records] == [2]
    assert commands.new_events == [Deposited("a", 5)]


async def test_then_looks_at_the_last_when_only_and_lists_streams_on_failure(
    commands: CommandScenario,
) -> None:
    handlers = Handlers(commands.store)
    await commands.given("account-a", Deposited("a", 10))
    await commands.when(handlers.deposit, Deposit("a", 1))
    await commands.when(handlers.transfer, Transfer("a", "b", 4))
    commands.then(Withdrawn("a", 4), Deposited("b", 4))
    with pytest.raises(AssertionError) as info:
        commands.then(Withdrawn("a", 4))
    message = str(info.value)
    assert "events Transfer appended differ" in message
    assert "  2. account-b: Deposited(account='b', amount=4)" in message
    assert "1 unexpected at the end" in message
    with pytest.raises(AssertionError, match="appended to account-a differ"):
        commands.then(Withdrawn("a", 3), stream="account-a")
    with pytest.raises(AssertionError, match="events Transfer appended differ"):
        commands.then_nothing()


async def test_a_failed_command_is_held_for_then_raises(commands: CommandScenario) -> None:
    handlers = Handlers(commands.store)
    outcome = await commands.when(handlers.deposit, Deposit("a", 0))
    assert isinstance(outcome.error, ValueError)
    error = commands.then_raises(ValueError, match="positive")
    assert error is outcome.error
    with pytest.raises(AssertionError, match="Deposit raised ValueError: amount must be"):
        _ = outcome.value
    with pytest.raises(AssertionError, match="Deposit raised ValueError"):
        _ = outcome.position
    with pytest.raises(AssertionError, match="but Deposit raised ValueError") as info:
        commands.then(Deposited("a", 0))
    assert info.value.__cause__ is error
    with pytest.raises(AssertionError, match="expected KeyError, but Deposit raised ValueError"):
        commands.then_raises(KeyError)
    with pytest.raises(AssertionError, match="does not match 'negative'"):
        commands.then_raises(ValueError, match="negative")


async def test_then_raises_fails_when_the_command_succeeded_or_appended_before_failing(
    commands: CommandScenario,
) -> None:
    handlers = Handlers(commands.store)
    await commands.given("account-a", Deposited("a", 10))
    await commands.when(handlers.deposit, Deposit("a", 1))
    with pytest.raises(AssertionError, match="expected ValueError, but Deposit raised nothing"):
        commands.then_raises(ValueError)
    await commands.when(handlers.transfer, Transfer("a", "b", -1))  # the target refuses
    with pytest.raises(AssertionError, match="but appended events") as info:
        commands.then_raises(ValueError)
    assert "account-a: Withdrawn(account='a', amount=-1)" in str(info.value)


async def test_when_takes_a_bus_and_then_needs_a_when(commands: CommandScenario) -> None:
    with pytest.raises(AssertionError, match=r"then\(\) before any when\(\)"):
        commands.then()
    handlers = Handlers(commands.store)
    seen: list[str] = []

    async def spy(dispatch: Any, nxt: Any) -> Any:
        seen.append(type(dispatch.message).__name__)
        return await nxt()

    bus = CommandBus()
    bus.register(Deposit, handlers.deposit)
    bus.use(spy)
    outcome = await commands.when(bus, Deposit("a", 2))
    assert outcome.value == 2
    assert seen == ["Deposit"]
    commands.then(Deposited("a", 2))


async def test_a_conflict_is_a_failure_like_any_other(commands: CommandScenario) -> None:
    async def stale(cmd: Deposit) -> None:
        await commands.store.append("account-a", [Deposited("a", 1)], 5)

    await commands.when(stale, Deposit("a", 1))
    assert commands.then_raises(ConcurrencyError).actual == 0


# -- projections --------------------------------------------------------------------------------


class Balances(Projection):
    name = "balances"
    tables = ("balances",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY,"
            " cents BIGINT NOT NULL, version BIGINT NOT NULL, position BIGINT NOT NULL)"
        )

    def _add(self, tx: SqlTx, account: str, cents: int, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO balances VALUES (?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET"
            " cents = cents + excluded.cents, version = excluded.version,"
            " position = excluded.position",
            (account, cents, record.stream_version, record.position),
        )

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        self._add(tx, event.account, event.amount * 100, record)

    @handles(Withdrawn)
    def on_withdrawn(self, tx: SqlTx, event: Withdrawn, record: RecordedEvent) -> None:
        if event.amount > 1000:
            raise ValueError("a projection bug")
        self._add(tx, event.account, -event.amount * 100, record)

    @handles(Credited)
    def on_credited(self, tx: SqlTx, event: Credited, record: RecordedEvent) -> None:
        self._add(tx, event.account, event.cents, record)


async def balance_of(db: ReadDatabase, account: str) -> QueryResult[int | None]:
    """A query handler: the answer and the checkpoint, from one read transaction."""

    def run(tx: SqlTx) -> QueryResult[int | None]:
        row = tx.fetchone("SELECT cents FROM balances WHERE account = ?", (account,))
        return QueryResult(None if row is None else int(row[0]), read_position(tx, "balances"))

    return await db.read(run)


@pytest.fixture
async def balances() -> AsyncIterator[ProjectionScenario]:
    async with ProjectionScenario(Balances(), codec(), MemoryDatabase()) as scenario:
        yield scenario


ROWS = "SELECT account, cents, version, position FROM balances ORDER BY account"


async def test_given_events_get_positions_and_stream_versions(
    balances: ProjectionScenario,
) -> None:
    assert await balances.given(Deposited("a", 1), Deposited("a", 2), stream="account-a") == 2
    assert await balances.given(Deposited("b", 5), stream="account-b") == 3
    assert await balances.given(Withdrawn("a", 1), stream="account-a") == 4
    assert await balances.given() == 4
    await balances.then_rows(ROWS, ("a", 200, 3, 4), ("b", 500, 1, 3))
    assert balances.position == 4


async def test_events_given_without_a_stream_share_one(balances: ProjectionScenario) -> None:
    await balances.given(Deposited("a", 1))
    await balances.given(Deposited("a", 1))
    await balances.then_rows(ROWS, ("a", 200, 2, 2))
    assert DEFAULT_STREAM == "test-1"


async def test_then_rows_fails_on_other_rows_and_shows_both(balances: ProjectionScenario) -> None:
    await balances.given(Deposited("a", 1), Deposited("b", 2))
    with pytest.raises(AssertionError) as info:
        await balances.then_rows(ROWS, ("a", 100, 1, 1), ("b", 250, 2, 2))
    message = str(info.value)
    assert f"rows of {ROWS!r} differ" in message
    assert "expected 2:\n  1. ('a', 100, 1, 1)\n  2. ('b', 250, 2, 2)" in message
    assert "actual 2:\n  1. ('a', 100, 1, 1)\n  2. ('b', 200, 2, 2)" in message
    assert "first difference at #2:\n    column 2: expected 250, actual 200" in message
    with pytest.raises(AssertionError, match="1 missing at the end"):
        await balances.then_rows(ROWS, ("a", 100, 1, 1), ("b", 200, 2, 2), ("c", 0, 1, 3))
    await balances.then_rows(ROWS, ("a", 100, 1, 1), ("b", ANY, 2, 2))
    await balances.then_rows("SELECT cents FROM balances WHERE account = ?", (100,), params=["a"])
    assert await balances.rows("SELECT account FROM balances ORDER BY 1") == [("a",), ("b",)]


async def test_a_query_handler_answers_with_the_checkpoint(balances: ProjectionScenario) -> None:
    assert await balance_of(balances.db, "a") == QueryResult(None, 0)
    await balances.given(Deposited("a", 3), Withdrawn("a", 1))
    assert await balance_of(balances.db, "a") == QueryResult(200, 2)
    count = await balances.read(lambda tx: tx.fetchone("SELECT COUNT(*) FROM balances"))
    assert count == (1,)


async def test_old_payloads_are_upcast_and_unhandled_types_skipped_undecoded(
    balances: ProjectionScenario,
) -> None:
    await balances.given_stored("Credited", {"account": "a", "amount": 2}, schema_version=1)
    await balances.given_stored("Credited", b'{"account": "a", "cents": 5}', schema_version=2)
    await balances.given_stored("NobodyHandlesThis", b"not even json", schema_version=1)
    await balances.then_rows(ROWS, ("a", 205, 2, 2))
    assert balances.position == 3


async def test_a_failing_handler_raises_its_error_naming_the_event_and_applies_nothing(
    balances: ProjectionScenario,
) -> None:
    await balances.given(Deposited("a", 1))
    with pytest.raises(ValueError, match="a projection bug") as info:
        await balances.given(Deposited("a", 5), Withdrawn("a", 2000), stream="account-a")
    assert info.value.__notes__ == [
        "while balances applied Withdrawn (position 3, stream 'account-a' version 2)"
    ]
    await balances.then_rows(ROWS, ("a", 100, 1, 1))
    assert balances.position == 1
    assert await balances.given(Deposited("a", 1), stream="account-a") == 2  # version 1 again
    await balances.then_rows(ROWS, ("a", 200, 1, 2))


# -- the kit itself ------------------------------------------------------------------------------


def test_the_kit_needs_neither_pytest_nor_a_backend() -> None:
    code = (
        "import sys, cqrskit.testing; "
        "print(sorted(m for m in ('pytest', 'cqrskit.backends.memory', 'sqlite3') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
