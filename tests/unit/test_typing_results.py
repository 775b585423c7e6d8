"""The runtime side of "types that help": typed command results, handler signatures checked
when a projection class is defined, and the aggregate id of a recorded event.

The type checker's side (what mypy accepts and refuses) is ``test_typing_mypy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from cqrskit import (
    Aggregate,
    Codec,
    Command,
    CommandBus,
    ConfigurationError,
    Event,
    Projection,
    RecordedEvent,
    Repository,
    SqlTx,
    handles,
)
from cqrskit.backends.memory import MemoryEventStore


@dataclass(frozen=True)
class Opened(Event):
    owner: str


@dataclass(frozen=True)
class Closed(Event):
    reason: str


@dataclass(frozen=True)
class Renamed(Event):
    owner: str


@dataclass(frozen=True, slots=True)
class AccountId:
    id: str


@dataclass(frozen=True)
class OpenAccount(Command[AccountId]):
    id: str
    owner: str


@dataclass(frozen=True)
class Ping(Command):  # bare: its result is Any
    n: int


class Account(Aggregate):
    stream_prefix = "account"

    def open(self, owner: str) -> None:
        self.record(Opened(owner))

    def apply(self, event: Event) -> None:
        if not isinstance(event, Opened):
            super().apply(event)


# -- command results -----------------------------------------------------------------------------


async def test_dispatch_returns_the_handlers_value_typed_by_the_command() -> None:
    store = MemoryEventStore(Codec([Opened]))
    accounts = Repository.for_type(store, Account)

    async def open_account(cmd: OpenAccount) -> AccountId:
        account = Account(cmd.id)
        account.open(cmd.owner)
        await accounts.save(account)
        return AccountId(account.id)

    async def ping(cmd: Ping) -> int:
        return cmd.n + 1

    bus = CommandBus()
    bus.register(OpenAccount, open_account)
    bus.register(Ping, ping)
    opened = await bus.dispatch(OpenAccount("a1", "ada"))
    assert (opened.value, opened.position) == (AccountId("a1"), 1)
    pinged = await bus.dispatch(Ping(41))
    assert (pinged.value, pinged.position) == (42, 0)
    assert bus.registered == (OpenAccount, Ping)


def test_a_parameterized_command_is_still_a_plain_frozen_dataclass() -> None:
    cmd = OpenAccount("a1", "ada")
    assert isinstance(cmd, Command)
    assert cmd == OpenAccount("a1", "ada")
    assert repr(cmd) == "OpenAccount(id='a1', owner='ada')"
    with pytest.raises(AttributeError):
        cmd.id = "a2"  # type: ignore[misc]


def test_registering_a_non_command_is_still_a_configuration_error() -> None:
    async def handler(cmd: Any) -> None:
        return None

    with pytest.raises(ConfigurationError, match="AccountId is not a Command"):
        CommandBus().register(AccountId, handler)  # type: ignore[arg-type]


# -- the aggregate id of a recorded event --------------------------------------------------------


def record(stream_id: str) -> RecordedEvent:
    return RecordedEvent(1, stream_id, 1, "e", "Opened", 1, b"{}", b"{}", 0.0)


@pytest.mark.parametrize(
    ("stream_id", "stream_type", "aggregate_id"),
    [
        ("user-u1", "user", "u1"),
        (
            "user-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "user",
            "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        ),
        ("follow-a-b", "follow", "a-b"),  # the first "-" ends the prefix
        ("user-", "user", ""),
        ("pings", "pings", ""),  # not an aggregate's stream: no "-"
        ("", "", ""),
    ],
)
def test_a_recorded_event_splits_its_stream_id_at_the_first_dash(
    stream_id: str, stream_type: str, aggregate_id: str
) -> None:
    r = record(stream_id)
    assert (r.stream_type, r.aggregate_id) == (stream_type, aggregate_id)


def test_aggregate_id_and_stream_type_are_computed_not_stored() -> None:
    assert RecordedEvent.__struct_fields__ == (
        "position",
        "stream_id",
        "stream_version",
        "event_id",
        "type",
        "schema_version",
        "payload",
        "metadata",
        "recorded_at",
    )
    r = record("account-a1")
    assert "aggregate_id" not in msgspec.structs.asdict(r)
    with pytest.raises(AttributeError):
        r.aggregate_id = "x"  # type: ignore[misc]


async def test_the_recorded_event_of_a_saved_aggregate_names_it() -> None:
    store = MemoryEventStore(Codec([Opened]))
    account = Account("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
    account.open("ada")
    await Repository.for_type(store, Account).save(account)
    (stored,) = await store.read_all()
    assert stored.stream_id == Account.stream_id(account.id)
    assert (stored.stream_type, stored.aggregate_id) == ("account", account.id)


def test_the_default_stream_prefix_is_the_lower_cased_class_name() -> None:
    class BankTransfer(Aggregate):
        pass

    assert record(BankTransfer.stream_id("t-1")).stream_type == "banktransfer"
    assert record(BankTransfer.stream_id("t-1")).aggregate_id == "t-1"


# -- projection handler signatures ---------------------------------------------------------------


def test_well_formed_handlers_are_accepted() -> None:
    class Accounts(Projection):
        name = "accounts"

        @handles(Opened)
        def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
            pass

        @handles(Closed)
        def on_closed(self, *args: Any) -> None:  # takes the three arguments too
            pass

        @handles(Renamed)
        def on_renamed(self, tx: SqlTx, event: Event, record: RecordedEvent, n: int = 0) -> None:
            pass

    assert Accounts().handled_types == {"Opened", "Closed", "Renamed"}


def test_a_handler_without_the_record_parameter_is_refused_naming_class_and_method() -> None:
    with pytest.raises(ConfigurationError) as info:

        class Accounts(Projection):
            name = "accounts"

            @handles(Opened)  # type: ignore[arg-type]
            def on_opened(self, tx: SqlTx, event: Opened) -> None:
                pass

    message = str(info.value)
    assert "Accounts.on_opened" in message
    assert "(self, tx, event, record)" in message


@pytest.mark.parametrize(
    "source",
    [
        "def on_opened(self, tx, event, record, extra): pass",  # one too many
        "def on_opened(self, tx, event, *, record): pass",  # record only by keyword
        "def on_opened(tx, event, record): pass",  # no self: one too many once bound
        "def on_opened(self): pass",
    ],
)
def test_a_handler_that_cannot_take_tx_event_record_is_refused(source: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(ConfigurationError, match=r"Accounts\.on_opened\("):
        type(
            "Accounts",
            (Projection,),
            {"name": "accounts", "on_opened": handles(Opened)(namespace["on_opened"])},
        )


def test_an_async_handler_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"Accounts\.on_opened: .*not async def"):

        class Accounts(Projection):
            name = "accounts"

            @handles(Opened)  # type: ignore[arg-type]
            async def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
                pass


def test_an_override_without_the_mark_is_checked_too() -> None:
    class Base(Projection):
        name = "base"

        @handles(Opened)
        def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"Derived\.on_opened\(self, tx\)"):

        class Derived(Base):
            def on_opened(self, tx: SqlTx) -> None:  # type: ignore[override]
                pass


def test_static_and_class_method_handlers_are_checked_as_they_are_called() -> None:
    # Runtime only: the typed decorator wants a method (self, tx, event, record).
    seen: list[str] = []

    class Accounts(Projection):
        name = "accounts"

        @handles(Opened)  # type: ignore[type-var, arg-type]
        @staticmethod
        def on_opened(tx: SqlTx, event: Event, record: RecordedEvent) -> None:
            seen.append("static")

        @handles(Closed)  # type: ignore[type-var]
        @classmethod
        def on_closed(cls, tx: SqlTx, event: Event, record: RecordedEvent) -> None:
            seen.append(cls.__name__)

    table = Accounts().handlers()
    table["Opened"](None, Opened("ada"), record("account-a1"))  # type: ignore[arg-type]
    table["Closed"](None, Closed("done"), record("account-a1"))  # type: ignore[arg-type]
    assert seen == ["static", "Accounts"]

    with pytest.raises(ConfigurationError, match=r"Broken\.on_opened"):

        class Broken(Projection):
            name = "broken"

            @handles(Opened)
            @staticmethod
            def on_opened(self: Any, tx: SqlTx, event: Event, record: RecordedEvent) -> None:
                pass
