"""The app of test_ops_console.py, served as a real process by ``cqrskit --app
tests.e2e._ops_app:api --url URL serve``: notes appended over HTTP, read by two projections
that fail on a note containing "poison" while the file named by ``OPS_APP_BUG`` exists (the
bug; deleting the file is the fix). ``notes`` parks such a note (``on_failure = "park"``),
``note_count`` stops at it. The operator routes are behind ``OPS_APP_TOKEN``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cqrskit import App, Event, Projection, RecordedEvent, SqlTx, handles
from cqrskit.fastapi import connect, operations_router


@dataclass(frozen=True)
class Noted(Event):
    text: str


def _bug(text: str) -> None:
    marker = os.environ.get("OPS_APP_BUG")
    if marker and "poison" in text and Path(marker).exists():
        raise ValueError(f"cannot file the note {text!r}")


class Notes(Projection):
    name = "notes"
    tables = ("notes",)
    on_failure = "park"

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS notes (position BIGINT PRIMARY KEY,"
            " stream_id TEXT NOT NULL, text TEXT NOT NULL)"
        )

    @handles(Noted)
    def on_noted(self, tx: SqlTx, event: Noted, record: RecordedEvent) -> None:
        _bug(event.text)
        tx.execute(
            "INSERT INTO notes (position, stream_id, text) VALUES (?, ?, ?)",
            (record.position, record.stream_id, event.text),
        )


class NoteCount(Projection):
    name = "note_count"
    tables = ("note_count",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS note_count (id INTEGER PRIMARY KEY, n BIGINT)")
        tx.execute("INSERT INTO note_count VALUES (1, 0) ON CONFLICT (id) DO NOTHING")

    @handles(Noted)
    def on_noted(self, tx: SqlTx, event: Noted, record: RecordedEvent) -> None:
        _bug(event.text)
        tx.execute("UPDATE note_count SET n = n + 1 WHERE id = 1")


class Notebook(App):
    events = (Noted,)
    projections = (Notes(), NoteCount())


class Note(BaseModel):
    stream_id: str
    text: str


def make_api() -> FastAPI:
    notebook = Notebook("memory://")
    api = FastAPI(title="notebook")
    connect(api, notebook)
    api.include_router(operations_router(notebook, token=os.environ.get("OPS_APP_TOKEN")))

    @api.post("/notes", status_code=201)
    async def note(body: Note) -> JSONResponse:
        appended = await notebook.append(body.stream_id, [Noted(body.text)])
        return JSONResponse({"position": appended.position}, 201)

    @api.get("/notes")
    async def notes() -> list[Any]:
        rows = await notebook.db.read(
            lambda tx: tx.fetchall("SELECT stream_id, text FROM notes ORDER BY position")
        )
        return [list(row) for row in rows]

    return api


api = make_api()
