"""The to-do app of test_app.py behind FastAPI, for ``cqrskit --app`` (tests of the
``cqrskit`` command, in-process and as real processes). Its URL is ``memory://`` until the
command's ``--url`` (or ``CQRSKIT_URL``) points it elsewhere.

- ``api``: the FastAPI app, connected (each answer says its process: ``X-Pid``);
  ``todo``: its bare App; ``make_api``: a factory;
- ``not_connected``, ``needs_an_argument``, ``a_number``: what ``--app`` refuses.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from cqrskit import Projection, RecordedEvent, SqlTx, handles
from cqrskit.fastapi import MinPosition, connect, respond, responses
from tests.integration.test_app import AddTask, OpenTasks, TaskAdded, TaskList, Todo


class TaskCount(Projection):
    """A second read model, so that two projections share out the leases."""

    name = "task_count"
    tables = ("task_count",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS task_count (id INTEGER PRIMARY KEY, n BIGINT)")
        tx.execute("INSERT INTO task_count VALUES (1, 0) ON CONFLICT (id) DO NOTHING")

    @handles(TaskAdded)
    def on_added(self, tx: SqlTx, event: TaskAdded, record: RecordedEvent) -> None:
        tx.execute("UPDATE task_count SET n = n + 1 WHERE id = 1")


class CliTodo(Todo):
    projections = (TaskList(), TaskCount())


class NewTask(BaseModel):
    title: str


def make_api() -> FastAPI:
    todo = CliTodo("memory://")
    api = FastAPI(title="todo")
    connect(api, todo, errors={ValueError: 422})

    @api.middleware("http")
    async def say_which_process(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["X-Pid"] = str(os.getpid())
        return response

    @api.post("/tasks", status_code=201, responses=responses(status=201, write=True))
    async def add(body: NewTask) -> Response:
        result = await todo.dispatch(AddTask(body.title))
        return respond(result, {"id": result.value}, status_code=201)

    @api.get("/tasks", responses=responses())
    async def open_tasks(min_position: MinPosition) -> Response:
        return respond(await todo.ask(OpenTasks(), min_position=min_position))

    @api.get("/projections")
    async def projections() -> dict[str, Any]:
        """This process's own view: which projections it runs, which it stands by for."""
        rows = [s.to_dict(("name", "position", "state")) for s in await todo.status()]
        return {"pid": os.getpid(), "projections": rows}

    return api


api = make_api()
todo = api.state.cqrskit
not_connected = FastAPI()
a_number = 42


def needs_an_argument(url: str) -> CliTodo:
    return CliTodo(url)
