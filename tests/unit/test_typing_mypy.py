"""What a type checker says about code using cqrskit: small programs written to a temporary
directory and checked by one ``mypy --strict`` run.

A line marked ``# E: <text>`` must get an error containing ``<text>``, and every error
must be on a marked line (on a decorator's line, or the line after it: where mypy puts a
decorator's error has moved between versions). The runtime side is ``test_typing_results.py``.
"""

from __future__ import annotations

import re
import textwrap
from collections import defaultdict
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]
MYPY_PATH = f"{ROOT / 'src'}:{ROOT / 'services' / 'social' / 'src'}"

PRELUDE = """\
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_type

from cqrskit import (
    Command, CommandBus, CommandResult, Event, Projection, RecordedEvent, SqlTx, handles,
)


@dataclass(frozen=True)
class Opened(Event):
    owner: str


@dataclass(frozen=True)
class Closed(Event):
    reason: str


@dataclass(frozen=True)
class Renamed(Event):
    owner: str


@dataclass(frozen=True)
class Moved(Event):
    to: str


@dataclass(frozen=True)
class Audited(Event):
    by: str


@dataclass(frozen=True, slots=True)
class AccountId:
    id: str


class SavingsId(AccountId):
    pass


@dataclass(frozen=True)
class OpenAccount(Command[AccountId]):
    owner: str


@dataclass(frozen=True)
class Ping(Command):  # bare: its result is Any
    n: int


async def open_account(cmd: OpenAccount) -> AccountId:
    return AccountId(cmd.owner)
"""

SNIPPETS = {
    "snippet_commands_ok": """
async def open_savings(cmd: OpenAccount) -> SavingsId:  # a subtype of the declared result
    return SavingsId(cmd.owner)


async def open_any(cmd: Command[AccountId]) -> AccountId:  # takes a supertype of the command
    return AccountId("a1")


async def ping(cmd: Ping) -> int:
    return cmd.n


async def anything(cmd: Ping) -> str:
    return "pong"


async def main(bus: CommandBus) -> None:
    bus.register(OpenAccount, open_account)
    bus.register(OpenAccount, open_savings)
    bus.register(OpenAccount, open_any)
    bus.register(Ping, ping)
    bus.register(Ping, anything)
    opened = await bus.dispatch(OpenAccount("ada"), correlation_id="c1")
    assert_type(opened, CommandResult[AccountId])
    assert_type(opened.value.id, str)
    assert_type(opened.position, int)
    pinged = await bus.dispatch(Ping(1))
    assert_type(pinged, CommandResult[Any])
""",
    "snippet_commands_bad": """
async def wrong_result(cmd: OpenAccount) -> str:
    return cmd.owner


async def wrong_command(cmd: Ping) -> AccountId:
    return AccountId("a1")


def sync_handler(cmd: OpenAccount) -> AccountId:
    return AccountId(cmd.owner)


async def main(bus: CommandBus) -> None:
    bus.register(OpenAccount, wrong_result)  # E: Argument 2 to "register" of "CommandBus"
    bus.register(OpenAccount, wrong_command)  # E: Argument 2 to "register" of "CommandBus"
    bus.register(OpenAccount, sync_handler)  # E: Argument 2 to "register" of "CommandBus"
    bus.register(AccountId, open_account)  # E: Argument 1 to "register" of "CommandBus"
    opened = await bus.dispatch(OpenAccount("ada"))
    n: int = opened.value  # E: Incompatible types in assignment
    print(opened.value.owner)  # E: "AccountId" has no attribute "owner"
    await bus.dispatch(AccountId("a1"))  # E: Argument 1 to "dispatch" of "CommandBus"
""",
    "snippet_projection_ok": """
class Accounts(Projection):
    name = "accounts"

    @handles(Opened)
    def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
        assert_type(record.aggregate_id, str)
        assert_type(record.stream_type, str)

    @handles(Closed, Renamed)
    def on_either(self, tx: SqlTx, event: Closed | Renamed, record: RecordedEvent) -> None:
        pass

    @handles(Moved, Audited)
    def on_any(self, tx: SqlTx, event: Event, record: RecordedEvent) -> None:  # a supertype
        pass

    def replay(self, tx: SqlTx, record: RecordedEvent) -> None:
        self.on_opened(tx, Opened("ada"), record)
        self.on_either(tx, Renamed("bob"), record)


class FourTypes(Projection):
    name = "four"

    @handles(Opened, Closed, Renamed, Moved)
    def on_four(
        self, tx: SqlTx, event: Opened | Closed | Renamed | Moved, record: RecordedEvent
    ) -> None:
        pass
""",
    "snippet_projection_bad": """
class Accounts(Projection):
    name = "accounts"

    @handles(Opened)  # E: Argument 1 has incompatible type
    def no_record(self, tx: SqlTx, event: Opened) -> None:
        pass

    @handles(Closed)  # E: Argument 1 has incompatible type
    def no_tx(self, event: Closed, record: RecordedEvent) -> None:
        pass

    @handles(Renamed)  # E: Argument 1 has incompatible type
    def wrong_event(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
        pass

    @handles(Moved, Audited)  # E: Argument 1 has incompatible type
    def narrower_than_the_union(self, tx: SqlTx, event: Moved, record: RecordedEvent) -> None:
        pass

    def replay(self, tx: SqlTx, record: RecordedEvent) -> None:
        self.wrong_event(tx, Closed("x"), record)  # E: Argument 2 to "wrong_event"


class Asynchronous(Projection):
    name = "asynchronous"

    @handles(Opened)  # E: Argument 1 has incompatible type
    async def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
        pass


class Answers(Projection):
    name = "answers"

    @handles(Opened)  # E: Argument 1 has incompatible type
    def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> int:
        return 1


class NotAProjection:
    @handles(Opened)  # E: Value of type variable "P"
    def on_opened(self, tx: SqlTx, event: Opened, record: RecordedEvent) -> None:
        pass
""",
    "snippet_social": """
from social.application.commands import CreatePost, PostId, RegisterUser, UserVersion
from social.application.handlers import CommandHandlers


def wire(bus: CommandBus, handlers: CommandHandlers) -> None:
    bus.register(RegisterUser, handlers.register_user)
    bus.register(CreatePost, handlers.create_post)
    bus.register(RegisterUser, handlers.create_post)  # E: Argument 2 to "register"
    bus.register(CreatePost, handlers.register_user)  # E: Argument 2 to "register"


async def use(bus: CommandBus) -> None:
    registered = await bus.dispatch(RegisterUser("ann@example.com", "password1"))
    assert_type(registered.value, UserVersion)
    posted = await bus.dispatch(CreatePost("u1", "hello"))
    assert_type(posted.value, PostId)
""",
    "snippet_app": """
from cqrskit import App, Query, QueryResult, command, query


@dataclass(frozen=True)
class Balance(Query[int]):
    owner: str


class Accounts(Projection):
    name = "accounts"


class Bank(App):
    @command(OpenAccount)
    async def open_account(self, cmd: OpenAccount) -> AccountId:
        return AccountId(cmd.owner)

    @command(OpenAccount)  # E: Argument 1
    async def open_wrongly(self, cmd: OpenAccount) -> str:
        return cmd.owner

    @query(Balance, reads=[Accounts])
    def balance(self, q: Balance, tx: SqlTx) -> int:
        return 0

    @query(Balance, reads=[Accounts])  # E: of "QueryDecorator" has incompatible type
    def balance_wrongly(self, q: Balance, tx: SqlTx) -> str:
        return ""

    @query(Balance)
    async def balance_async(self, q: Balance) -> QueryResult[int]:
        return QueryResult(0, 0)


async def use(bank: Bank) -> None:
    opened = await bank.dispatch(OpenAccount("ann"))
    assert_type(opened.value, AccountId)
    answer = await bank.ask(Balance("ann"))
    assert_type(answer.value, int)
""",
}

MARK = re.compile(r"#\s*E:\s*(?P<text>.+?)\s*$")
ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*)$")


def _write(tmp_path: Path) -> tuple[list[Path], dict[tuple[str, int], str]]:
    """The snippet files, and what each marked line's error must say."""
    files = []
    expected: dict[tuple[str, int], str] = {}
    for name, body in SNIPPETS.items():
        text = PRELUDE + textwrap.dedent(body)
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        files.append(path)
        for number, line in enumerate(text.splitlines(), 1):
            if found := MARK.search(line):
                expected[(path.name, number)] = found["text"]
    return files, expected


def _decorator_lines(path: Path) -> set[int]:
    return {
        number
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith("@")
    }


def test_mypy_accepts_the_right_types_and_refuses_the_wrong_ones(tmp_path: Path) -> None:
    files, expected = _write(tmp_path)
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nstrict = True\npython_version = 3.11\nmypy_path = {MYPY_PATH}\n")
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            "--no-color-output",
            *map(str, files),
        ]
    )
    assert stderr == ""
    decorators = {path.name: _decorator_lines(path) for path in files}
    errors: dict[tuple[str, int], list[str]] = defaultdict(list)
    for line in stdout.splitlines():
        found = ERROR.match(line)
        if found is None:
            continue  # a note
        name, number = Path(found["path"]).name, int(found["line"])
        if (name, number) not in expected and number - 1 in decorators[name]:
            number -= 1  # a decorator's error on the decorated def's line
        errors[(name, number)].append(found["message"])

    unexpected = {where: messages for where, messages in errors.items() if where not in expected}
    assert unexpected == {}, stdout
    missing = {
        where: text
        for where, text in expected.items()
        if not any(text in message for message in errors.get(where, []))
    }
    assert missing == {}, stdout
    assert status == 1
    assert {name for name, _ in errors} == {
        "snippet_app.py",
        "snippet_commands_bad.py",
        "snippet_projection_bad.py",
        "snippet_social.py",
    }
