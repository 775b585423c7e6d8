"""Aggregates, the repository (over the in-memory store) and the command and query buses."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from cqrskit import (
    NO_STREAM,
    Aggregate,
    Codec,
    Command,
    CommandBus,
    ConcurrencyError,
    ConfigurationError,
    Dispatch,
    Event,
    HandlerNotFound,
    Query,
    QueryBus,
    QueryResult,
    Repository,
    StaleVersion,
    StreamNotFound,
    current_context,
    logging_middleware,
    retry_on_conflict_middleware,
    timing_middleware,
)
from cqrskit.backends.memory import MemoryEventStore
from cqrskit.bus import Next

# -- a small domain --------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened(Event):
    owner: str


@dataclass(frozen=True)
class Deposited(Event):
    amount: int


@dataclass(frozen=True)
class Audited(Event):
    note: str


class Account(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0
        self.restored = False

    def open(self, owner: str) -> None:
        if self.exists:
            raise ValueError("already open")
        self.record(Opened(owner))

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.record(Deposited(amount))

    def apply(self, event: Event) -> None:
        match event:
            case Opened(owner=owner):
                self.owner = owner
            case Deposited(amount=amount):
                self.balance += amount
            case _:
                super().apply(event)

    def snapshot_state(self) -> Any:
        return {"owner": self.owner, "balance": self.balance}

    def restore_state(self, state: Any) -> None:
        self.owner = state["owner"]
        self.balance = state["balance"]
        self.restored = True


class Ledger(Aggregate):
    stream_prefix = "ledger-v2"

    def apply(self, event: Event) -> None:
        if not isinstance(event, Audited):
            super().apply(event)


@pytest.fixture
def store() -> MemoryEventStore:
    return MemoryEventStore(Codec([Opened, Deposited, Audited]))


# -- Aggregate -------------------------------------------------------------------------------


def test_record_applies_and_keeps_pending_events() -> None:
    account = Account("a1")
    assert not account.exists
    account.open("ada")
    account.deposit(5)
    assert (account.owner, account.balance, account.version) == ("ada", 5, 2)
    assert account.pending_events == [Opened("ada"), Deposited(5)]
    assert account.committed_version == 0
    account.mark_saved()
    assert account.pending_events == []
    assert account.committed_version == 2
    assert account.exists


def test_a_rule_that_fails_records_nothing() -> None:
    account = Account("a1")
    with pytest.raises(ValueError, match="positive"):
        account.deposit(0)
    assert account.version == 0
    assert account.pending_events == []


def test_replay_changes_state_without_pending_events() -> None:
    account = Account("a1")
    account.replay(Opened("ada"))
    account.replay(Deposited(3))
    assert (account.balance, account.version, account.pending_events) == (3, 2, [])
    assert account.committed_version == 2


def test_an_event_the_aggregate_does_not_know_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Account does not apply Audited"):
        Account("a1").replay(Audited("x"))


def test_stream_ids() -> None:
    assert Account.stream_id("a1") == "account-a1"
    assert Ledger.stream_id("l1") == "ledger-v2-l1"


def test_snapshots_are_opt_in() -> None:
    ledger = Ledger("l1")
    assert ledger.snapshot_state() is None
    with pytest.raises(TypeError, match="does not restore snapshots"):
        ledger.restore_state({})


# -- Repository ------------------------------------------------------------------------------


async def test_load_of_a_missing_stream_is_a_new_aggregate(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Account)
    account = await repo.load("a1")
    assert (account.id, account.version, account.exists) == ("a1", 0, False)
    with pytest.raises(StreamNotFound) as info:
        await repo.get("a1")
    assert info.value.stream_id == "account-a1"


async def test_save_then_load(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Account)
    account = Account("a1")
    account.open("ada")
    account.deposit(7)
    result = await repo.save(account)
    assert result is not None
    assert (result.position, result.version) == (2, 2)
    assert account.pending_events == []
    assert account.committed_version == 2
    loaded = await repo.get("a1")
    assert (loaded.owner, loaded.balance, loaded.version) == ("ada", 7, 2)
    assert await repo.save(loaded) is None  # nothing pending: nothing appended
    assert await store.head_position() == 2


async def test_save_expects_the_loaded_version(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Account)
    first = Account("a1")
    first.open("ada")
    await repo.save(first)
    one, two = await repo.get("a1"), await repo.get("a1")
    one.deposit(1)
    two.deposit(2)
    await repo.save(one)
    with pytest.raises(ConcurrencyError) as info:
        await repo.save(two)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert two.pending_events == [Deposited(2)]  # kept: the caller may retry


async def test_saving_a_new_aggregate_expects_no_stream(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Account)
    await store.append("account-a1", [Opened("someone")])
    account = Account("a1")
    account.open("ada")
    with pytest.raises(ConcurrencyError) as info:
        await repo.save(account)
    assert info.value.expected is NO_STREAM
    assert info.value.actual == 1


async def test_snapshots_every_n_events(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Account, snapshot_every=2)
    account = Account("a1")
    account.open("ada")
    await repo.save(account)  # version 1: no snapshot yet
    assert await store.load_snapshot("account-a1") is None
    account.deposit(1)
    account.deposit(2)
    await repo.save(account)  # version 3 crosses 2
    snapshot = await store.load_snapshot("account-a1")
    assert snapshot is not None
    assert snapshot.version == 3
    account.deposit(4)
    await repo.save(account)  # version 4 crosses 4
    snapshot = await store.load_snapshot("account-a1")
    assert snapshot is not None
    assert snapshot.version == 4
    account.deposit(8)
    await repo.save(account)  # version 5
    loaded = await repo.get("a1")
    assert loaded.restored
    assert (loaded.owner, loaded.balance, loaded.version) == ("ada", 15, 5)
    plain = await Repository.for_type(store, Account).get("a1")
    assert (plain.restored, plain.balance, plain.version) == (False, 15, 5)


async def test_no_snapshot_for_aggregates_that_take_none(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Ledger, snapshot_every=1)
    ledger = Ledger("l1")
    ledger.record(Audited("a"))
    await repo.save(ledger)
    assert await store.load_snapshot("ledger-v2-l1") is None
    assert (await repo.get("l1")).version == 1


# -- CommandBus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAccount(Command):
    id: str
    owner: str


@dataclass(frozen=True)
class Deposit(Command):
    id: str
    amount: int


@dataclass(frozen=True)
class Compare(Command):
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Unhandled(Command):
    pass


@dataclass(frozen=True)
class Balance(Query[int]):
    id: str


def account_bus(store: MemoryEventStore) -> CommandBus:
    repo = Repository.for_type(store, Account)
    bus = CommandBus()

    async def open_account(command: OpenAccount) -> str:
        account = Account(command.id)
        account.open(command.owner)
        await repo.save(account)
        return command.id

    async def deposit(command: Deposit) -> int:
        account = await repo.get(command.id)
        account.deposit(command.amount)
        await repo.save(account)
        return account.version

    async def compare(command: Compare) -> int:
        accounts = [await repo.get(i) for i in command.ids]
        return max(a.balance for a in accounts)

    bus.register(OpenAccount, open_account)
    bus.register(Deposit, deposit)
    bus.register(Compare, compare)
    return bus


async def test_command_result_carries_value_and_the_append_position(
    store: MemoryEventStore,
) -> None:
    bus = account_bus(store)
    opened = await bus.dispatch(OpenAccount("a1", "ada"))
    assert (opened.value, opened.position) == ("a1", 1)
    await store.append("elsewhere", [Audited("x")] * 3)
    deposited = await bus.dispatch(Deposit("a1", 5))
    assert (deposited.value, deposited.position) == (2, 5)
    assert deposited.position == (await store.read_stream("account-a1"))[-1].position


async def test_a_command_that_appends_nothing_answers_the_position_it_read(
    store: MemoryEventStore,
) -> None:
    bus = account_bus(store)
    await bus.dispatch(OpenAccount("a1", "ada"))  # position 1
    await bus.dispatch(OpenAccount("a2", "bob"))  # position 2
    await bus.dispatch(Deposit("a1", 3))  # position 3
    await store.append("elsewhere", [Audited("x")])  # position 4, not read by Compare
    result = await bus.dispatch(Compare(("a1", "a2")))
    assert (result.value, result.position) == (3, 3)
    missing = Compare(("nobody",))
    with pytest.raises(StreamNotFound):
        await bus.dispatch(missing)


async def test_dispatch_puts_the_context_into_event_metadata(store: MemoryEventStore) -> None:
    bus = account_bus(store)
    await bus.dispatch(OpenAccount("a1", "ada"), correlation_id="req-7", extra={"user": "u1"})
    await bus.dispatch(Deposit("a1", 1))
    first, second = (store.codec.decode_metadata(r.metadata) for r in await store.read_all())
    assert first.correlation_id == "req-7"
    assert first.extra == {"user": "u1"}
    assert first.causation_id is not None
    assert first.causation_id != second.causation_id
    assert second.correlation_id == second.causation_id  # no correlation id: the command's own
    assert current_context() is None  # the context ends with the dispatch


async def test_an_unregistered_command_raises_handler_not_found() -> None:
    with pytest.raises(HandlerNotFound, match="no command handler registered") as info:
        await CommandBus().dispatch(Unhandled())
    assert info.value.message_type is Unhandled
    assert current_context() is None


async def noop(command: Any) -> None:
    return None


def test_registering_twice_or_a_non_command_is_a_configuration_error() -> None:
    bus = CommandBus()
    bus.register(Unhandled, noop)
    with pytest.raises(ConfigurationError, match="already registered"):
        bus.register(Unhandled, noop)
    with pytest.raises(ConfigurationError, match="is not a Command"):
        bus.register(Balance, noop)
    assert bus.registered == (Unhandled,)


async def test_middleware_runs_in_the_order_added_outermost_first() -> None:
    trace: list[str] = []

    def tracer(name: str) -> Any:
        async def mw(dispatch: Dispatch, nxt: Next) -> Any:
            trace.append(f"{name}>{dispatch.kind}:{type(dispatch.message).__name__}")
            result = await nxt()
            trace.append(f"{name}<")
            return result

        return mw

    async def handler(command: Unhandled) -> str:
        trace.append("handler")
        return "done"

    bus = CommandBus()
    bus.register(Unhandled, handler)
    bus.use(tracer("a"), tracer("b"))
    bus.use(tracer("c"))
    assert (await bus.dispatch(Unhandled())).value == "done"
    assert trace == [
        "a>command:Unhandled",
        "b>command:Unhandled",
        "c>command:Unhandled",
        "handler",
        "c<",
        "b<",
        "a<",
    ]


async def test_retry_on_conflict_retries_only_handlers_that_declared_it() -> None:
    calls = {"safe": 0, "unsafe": 0}

    @dataclass(frozen=True)
    class Safe(Command):
        pass

    @dataclass(frozen=True)
    class Unsafe(Command):
        pass

    async def safe(command: Safe) -> str:
        calls["safe"] += 1
        if calls["safe"] < 3:
            raise ConcurrencyError("s", 1, 2)
        return "ok"

    async def unsafe(command: Unsafe) -> str:
        calls["unsafe"] += 1
        raise ConcurrencyError("s", 1, 2)

    bus = CommandBus()
    bus.register(Safe, safe, retry_on_conflict=True)
    bus.register(Unsafe, unsafe)
    bus.use(retry_on_conflict_middleware(attempts=5, base_delay=0.001))
    assert (await bus.dispatch(Safe())).value == "ok"
    assert calls["safe"] == 3
    with pytest.raises(ConcurrencyError):
        await bus.dispatch(Unsafe())
    assert calls["unsafe"] == 1


async def test_retry_on_conflict_gives_up_after_its_attempts() -> None:
    calls = 0

    async def always_conflicts(command: Unhandled) -> None:
        nonlocal calls
        calls += 1
        raise ConcurrencyError("s", 1, 2)

    bus = CommandBus()
    bus.register(Unhandled, always_conflicts, retry_on_conflict=True)
    bus.use(retry_on_conflict_middleware(attempts=3, base_delay=0.001))
    with pytest.raises(ConcurrencyError):
        await bus.dispatch(Unhandled())
    assert calls == 3


async def test_a_clients_stale_version_is_refused_at_load_and_never_retried(
    store: MemoryEventStore,
) -> None:
    repo = Repository.for_type(store, Account)
    account = Account("a1")
    account.open("ada")
    await repo.save(account)
    assert (await repo.get("a1", expected_version=1)).version == 1
    calls = 0

    async def close_at(command: Unhandled) -> None:
        nonlocal calls
        calls += 1
        await repo.get("a1", expected_version=7)  # the client's version, not current

    bus = CommandBus()
    bus.register(Unhandled, close_at, retry_on_conflict=True)
    bus.use(retry_on_conflict_middleware(attempts=5, base_delay=0.001))
    with pytest.raises(StaleVersion) as raised:
        await bus.dispatch(Unhandled())
    assert (raised.value.expected, raised.value.actual) == (7, 1)
    assert isinstance(raised.value, ConcurrencyError)  # a 409 like any conflict
    assert calls == 1  # a fresh load cannot make the client's version current


async def test_retry_reruns_a_real_handler_from_a_fresh_load(store: MemoryEventStore) -> None:
    repo = Repository.for_type(store, Account)
    account = Account("a1")
    account.open("ada")
    await repo.save(account)
    interfered = False

    async def deposit(command: Deposit) -> int:
        nonlocal interfered
        loaded = await repo.get(command.id)
        if not interfered:  # another writer gets in between our load and our save
            interfered = True
            await store.append("account-a1", [Deposited(100)])
        loaded.deposit(command.amount)
        await repo.save(loaded)
        return loaded.balance

    bus = CommandBus()
    bus.register(Deposit, deposit, retry_on_conflict=True)
    bus.use(retry_on_conflict_middleware(base_delay=0.001))
    result = await bus.dispatch(Deposit("a1", 5))
    assert (result.value, result.position) == (105, 3)


async def test_logging_and_timing_middleware(caplog: pytest.LogCaptureFixture) -> None:
    observed: list[tuple[str, str, float, bool]] = []

    async def fails(command: Unhandled) -> None:
        raise ValueError("secret detail")

    bus = CommandBus()
    bus.register(Unhandled, fails)
    bus.use(logging_middleware(), timing_middleware(lambda *a: observed.append(a)))
    with (
        caplog.at_level(logging.INFO, logger="cqrskit.bus"),
        pytest.raises(ValueError, match="secret"),
    ):
        await bus.dispatch(Unhandled())
    assert "command Unhandled failed: ValueError" in caplog.text
    assert "secret detail" not in caplog.text
    ((kind, name, seconds, ok),) = observed
    assert (kind, name, ok) == ("command", "Unhandled", False)
    assert seconds >= 0


# -- QueryBus --------------------------------------------------------------------------------


async def test_query_bus_answers_with_a_query_result() -> None:
    async def balance(query: Balance) -> QueryResult[int]:
        return QueryResult(42, position=9)

    bus = QueryBus()
    bus.register(Balance, balance)
    result = await bus.ask(Balance("a1"))
    assert (result.value, result.position) == (42, 9)


async def test_query_bus_errors() -> None:
    async def wrong(query: Balance) -> int:
        return 42

    bus = QueryBus()
    with pytest.raises(HandlerNotFound, match="no query handler"):
        await bus.ask(Balance("a1"))
    bus.register(Balance, wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must return a QueryResult"):
        await bus.ask(Balance("a1"))
    with pytest.raises(ConfigurationError, match="already registered"):
        bus.register(Balance, wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is not a Query"):
        bus.register(Unhandled, wrong)  # type: ignore[arg-type]
