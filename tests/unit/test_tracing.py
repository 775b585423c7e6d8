"""Tracing a request (cqrskit.fastapi.RequestTracing, cqrskit._tracing): the request id, its
way into log records and events' metadata, the access log, the metrics callback, the log
formats and the command's ``--log-format``. In memory, over ASGI: no socket."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send
from typer.testing import CliRunner

from cqrskit import Aggregate, App, Command, CommandContext, Event, command
from cqrskit._tracing import (
    RequestIdFilter,
    current_request_id,
    reset_request_id,
    set_request_id,
    valid_request_id,
)
from cqrskit.cli import JsonFormatter, TextFormatter, cli, configure_logging
from cqrskit.context import _reset, _set
from cqrskit.fastapi import RequestTracing, connect
from social.cli import app as social_cli

HEX_ID = re.compile(r"[0-9a-f]{32}")

# -- an app: one aggregate, one command ------------------------------------------------------


@dataclass(frozen=True)
class Noted(Event):
    text: str


@dataclass(frozen=True)
class Note(Command[str]):
    text: str


class Notebook(Aggregate):
    def note(self, text: str) -> None:
        self.record(Noted(text))

    def apply(self, event: Event) -> None:
        if not isinstance(event, Noted):
            super().apply(event)


class Notes(App):
    events = (Noted,)

    @command(Note)
    async def note(self, cmd: Note) -> str:
        logging.getLogger("notes").info("noting")
        book = Notebook(cmd.text)
        book.note(cmd.text)
        await self.repository(Notebook).save(book)
        return book.id


class Body(BaseModel):
    text: str


def make_api(notes: Notes, seen: list[tuple[str, str, int, float]]) -> FastAPI:
    api = FastAPI()
    connect(api, notes, on_request=lambda *args: seen.append(args))

    @api.post("/notes")
    async def add(body: Body) -> dict[str, str | None]:
        await notes.dispatch(Note(body.text))
        return {"request_id": current_request_id()}

    @api.get("/notes/{note_id}")
    async def one(note_id: str) -> dict[str, str]:
        return {"id": note_id}

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    return api


@pytest.fixture
def seen() -> list[tuple[str, str, int, float]]:
    return []


@pytest.fixture
async def notes() -> AsyncIterator[Notes]:
    async with Notes() as app:
        yield app


@pytest.fixture
async def client(notes: Notes, seen: list[Any]) -> AsyncIterator[httpx.AsyncClient]:
    api = make_api(notes, seen)
    transport = httpx.ASGITransport(api, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes") as http:
        yield http


# -- the request id --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"abc-123", b"a", b"A.b_c:d-9", b"x" * 128])
def test_a_request_id_of_1_to_128_safe_characters_is_kept(value: bytes) -> None:
    assert valid_request_id(value) == value.decode()


@pytest.mark.parametrize(
    "value", [b"", b"x" * 129, b"has space", b"new\nline", b"caf\xc3\xa9", b"a/b", b"abc\n"]
)
def test_any_other_request_id_is_refused(value: bytes) -> None:
    assert valid_request_id(value) is None


async def test_the_clients_id_comes_back_and_reaches_the_events_metadata(
    notes: Notes, client: httpx.AsyncClient
) -> None:
    resp = await client.post("/notes", json={"text": "milk"}, headers={"X-Request-ID": "abc-123"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Request-ID"] == "abc-123"
    assert resp.json() == {"request_id": "abc-123"}  # what the route saw
    (record,) = await notes.store.read_stream(Notebook.stream_id("milk"))
    metadata = notes.store.codec.decode_metadata(record.metadata)
    assert metadata.correlation_id == "abc-123"
    assert metadata.causation_id not in (None, "abc-123")  # the command's own id
    assert current_request_id() is None  # nothing leaks out of the request


async def test_an_invalid_or_missing_id_is_replaced_by_a_new_one(
    notes: Notes, client: httpx.AsyncClient
) -> None:
    bad = await client.post("/notes", json={"text": "a"}, headers={"X-Request-ID": "no spaces"})
    none = await client.post("/notes", json={"text": "b"})
    ids = [bad.headers["X-Request-ID"], none.headers["X-Request-ID"]]
    assert all(HEX_ID.fullmatch(i) for i in ids), ids
    assert ids[0] != ids[1]
    (record,) = await notes.store.read_stream(Notebook.stream_id("b"))
    assert notes.store.codec.decode_metadata(record.metadata).correlation_id == ids[1]


async def test_a_command_outside_a_request_correlates_with_itself(notes: Notes) -> None:
    await notes.dispatch(Note("c"))
    (record,) = await notes.store.read_stream(Notebook.stream_id("c"))
    metadata = notes.store.codec.decode_metadata(record.metadata)
    assert metadata.correlation_id == metadata.causation_id


async def test_an_unhandled_error_answers_500_with_the_id(client: httpx.AsyncClient) -> None:
    resp = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert resp.status_code == 500
    assert resp.headers["X-Request-ID"] == "boom-1"


async def test_middleware_added_after_connect_is_inside_the_tracing(notes: Notes) -> None:
    api = make_api(notes, [])
    ids: list[str | None] = []

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            ids.append(current_request_id())
            await self.app(scope, receive, send)

    api.add_middleware(Spy)
    transport = httpx.ASGITransport(api)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes") as http:
        await http.get("/notes/1", headers={"X-Request-ID": "outer"})
    assert ids == ["outer"]


# -- the access log and the metrics callback -------------------------------------------------


async def test_one_access_line_and_one_observation_per_request(
    client: httpx.AsyncClient, seen: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await client.get("/notes/n-42", headers={"X-Request-ID": "r-1"})
    await client.get("/nowhere", headers={"X-Request-ID": "r-2"})
    await client.request("BREW", "/notes/n-42", headers={"X-Request-ID": "r-3"})
    access = [r for r in caplog.records if r.name == "cqrskit.access"]
    assert [r.getMessage().rsplit(" ", 1)[0] for r in access] == [
        "GET /notes/n-42 200",
        "GET /nowhere 404",
        "BREW /notes/n-42 405",
    ]
    first: Any = access[0]
    assert (first.method, first.path, first.route, first.status) == (
        "GET",
        "/notes/n-42",
        "/notes/{note_id}",
        200,
    )
    assert first.duration_ms >= 0
    # The route template, never the raw path; a method nobody knows is _OTHER.
    assert [(m, route, status) for m, route, status, _ in seen] == [
        ("GET", "/notes/{note_id}", 200),
        ("GET", "unmatched", 404),
        ("_OTHER", "/notes/{note_id}", 405),
    ]
    assert all(seconds >= 0 for *_, seconds in seen)


async def test_bare_asgi_apps_get_an_id_and_a_500_when_they_answer_nothing() -> None:
    sent: list[Message] = []

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        assert current_request_id() == "x"

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    seen: list[Any] = []
    traced = RequestTracing(silent, on_request=lambda *a: seen.append(a))
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", b"x")]}
    await traced(scope, receive, send)
    assert sent == []
    assert seen[0][:3] == ("GET", "unmatched", 500)
    lifespan: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        lifespan.append(scope["type"])

    await RequestTracing(app)({"type": "lifespan"}, receive, send)
    assert lifespan == ["lifespan"]


# -- log records -------------------------------------------------------------------------------


def _record(msg: str = "hello", **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_the_filter_adds_the_request_and_command_ids_unless_the_record_has_them() -> None:
    flt = RequestIdFilter()
    outside = _record()
    flt.filter(outside)
    assert (outside.request_id, outside.correlation_id) == (None, None)  # type: ignore[attr-defined]
    token = set_request_id("req-1")
    ctx_token = _set(CommandContext(command_id="cmd-1"))
    try:
        inside, own = _record(), _record(request_id="mine")
        assert flt.filter(inside)
        assert flt.filter(own)
    finally:
        _reset(ctx_token)
        reset_request_id(token)
    assert (inside.request_id, inside.correlation_id) == ("req-1", "cmd-1")  # type: ignore[attr-defined]
    assert own.request_id == "mine"  # type: ignore[attr-defined]


def test_json_lines_carry_the_ids_the_fields_and_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = _record("GET %s", request_id="abc-123", correlation_id="abc-123", status=200)
    record.args = ("/x\n",)
    record.exc_info = exc_info
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "app"
    assert entry["message"] == "GET /x\n"
    assert (entry["request_id"], entry["correlation_id"], entry["status"]) == ("abc-123",) * 2 + (
        200,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    assert entry["exc_info"].startswith("Traceback")
    assert "ValueError: boom" in entry["exc_info"]
    assert set(json.loads(JsonFormatter().format(_record()))) == {
        "time",
        "level",
        "logger",
        "message",
    }


def test_text_lines_end_with_the_ids_and_stay_one_line() -> None:
    formatter = TextFormatter("%(levelname)s %(message)s")
    assert formatter.format(_record("a\nb", request_id="r-1", correlation_id="r-1")) == (
        "INFO a\\nb request_id=r-1"
    )
    assert formatter.format(_record("x", request_id=None, correlation_id="c-1")) == (
        "INFO x correlation_id=c-1"
    )
    assert formatter.format(_record("plain")) == "INFO plain"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root, access = logging.getLogger(), logging.getLogger("cqrskit.access")
    handlers, level, access_level = list(root.handlers), root.level, access.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    access.setLevel(access_level)


def test_configure_logging_installs_one_handler_in_the_format_asked(
    root_logger: logging.Logger,
) -> None:
    before = set(root_logger.handlers)
    configure_logging("text")
    configure_logging("json")  # replaces the first
    (added,) = set(root_logger.handlers) - before
    assert isinstance(added.formatter, JsonFormatter)
    assert any(isinstance(f, RequestIdFilter) for f in added.filters)
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("xml")
    access = logging.getLogger("cqrskit.access")
    assert access.isEnabledFor(logging.INFO)
    configure_logging("text", access_log=False)
    assert not access.isEnabledFor(logging.INFO)
    assert access.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("which", ["cqrskit", "social"])
def test_the_commands_offer_log_format_and_refuse_an_unknown_one(which: str, command: str) -> None:
    runner = CliRunner()
    typer_app, before = (cli, ["--app", "x:y"]) if which == "cqrskit" else (social_cli, [])
    shown = runner.invoke(typer_app, [command, "--help"]).output
    assert "--log-format" in shown
    assert ("--no-access-log" in shown) == (command == "serve")
    wrong = runner.invoke(typer_app, [*before, command, "--log-format", "xml"])
    assert wrong.exit_code == 2
    assert "must be one of text, json" in wrong.output
