"""cqrskit.fastapi on an app of its own (the to-do app of test_app), on SQLite files:
lifespan, the consistency headers, the error answers and what OpenAPI says of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel

from cqrskit.fastapi import (
    READ_RESPONSES,
    WRITE_RESPONSES,
    MinPosition,
    connect,
    respond,
    responses,
)
from tests.integration.test_app import AddTask, FinishTask, OpenTasks, Todo


class NewTask(BaseModel):
    title: str


class Finish(BaseModel):
    version: int


def make_api(todo: Todo) -> FastAPI:
    api = FastAPI(title="todo")
    connect(api, todo, errors={ValueError: 422})

    @api.post("/tasks", status_code=201, responses=responses(status=201, write=True))
    async def add(body: NewTask) -> Response:
        result = await todo.dispatch(AddTask(body.title))
        return respond(result, {"id": result.value}, status_code=201)

    @api.post("/tasks/{task_id}/done", responses=WRITE_RESPONSES)
    async def finish(task_id: str, body: Finish) -> Response:
        result = await todo.dispatch(FinishTask(task_id, body.version))
        return respond(result, {"version": result.value})

    @api.get("/tasks", responses=READ_RESPONSES)
    async def open_tasks(min_position: MinPosition) -> Response:
        return respond(await todo.ask(OpenTasks(), min_position=min_position))

    return api


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    todo = Todo(f"sqlite:///{tmp_path}", min_position_timeout=0.3)
    api = make_api(todo)
    async with api.router.lifespan_context(api):
        assert todo.is_open  # the lifespan opened it
        transport = httpx.ASGITransport(api, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://todo") as client:
            yield client
    assert not todo.is_open  # and closed it


def body(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


async def test_writes_carry_x_position_and_reads_wait_for_it(client: httpx.AsyncClient) -> None:
    added = await client.post("/tasks", json={"title": "milk"})
    task_id = body(added, 201)["id"]
    position = int(added.headers["X-Position"])
    read = await client.get("/tasks", headers={"X-Min-Position": str(position)})
    assert body(read, 200) == ["milk"]
    assert int(read.headers["X-Position"]) >= position
    done = await client.post(f"/tasks/{task_id}/done", json={"version": 1})
    assert body(done, 200) == {"version": 2}
    after = await client.get("/tasks", headers={"X-Min-Position": done.headers["X-Position"]})
    assert body(after, 200) == []


async def test_errors_have_their_status_and_body(client: httpx.AsyncClient) -> None:
    task_id = body(await client.post("/tasks", json={"title": "milk"}), 201)["id"]
    await client.post(f"/tasks/{task_id}/done", json={"version": 1})
    stale = await client.post(f"/tasks/{task_id}/done", json={"version": 1})
    assert body(stale, 409) == {
        "error": "Conflict: resource has been modified",
        "current_version": 2,
    }
    assert body(await client.post("/tasks", json={"title": " "}), 422) == {
        "error": "a task needs a title"
    }  # the app's own error, from errors=
    invalid = body(await client.post("/tasks", json={"name": "x"}), 422)
    assert invalid["details"][0]["field"] == "title"
    malformed = await client.post(
        "/tasks", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert body(malformed, 400)["error"] == "Malformed JSON body"
    bad = await client.get("/tasks", headers={"X-Min-Position": "1" * 20})
    assert "19 digits" in body(bad, 400)["error"]
    beyond = await client.get("/tasks", headers={"X-Min-Position": "999"})
    answer = body(beyond, 503)
    assert beyond.headers["Retry-After"] == "1"
    assert answer["head"] == 2
    assert "beyond the log" in answer["error"]


async def test_openapi_documents_the_headers_and_the_error_bodies(
    client: httpx.AsyncClient,
) -> None:
    spec = body(await client.get("/openapi.json"), 200)
    schemas = spec["components"]["schemas"]
    assert schemas["Conflict"]["required"] == ["error", "current_version"]
    assert set(schemas["NotCaughtUp"]["properties"]) == {"error", "position", "head"}
    read = spec["paths"]["/tasks"]["get"]
    assert "X-Position" in read["responses"]["200"]["headers"]
    assert any(p["name"] == "x-min-position" and p["in"] == "header" for p in read["parameters"])
    assert read["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NotCaughtUp"
    }
    write = spec["paths"]["/tasks"]["post"]
    assert "X-Position" in write["responses"]["201"]["headers"]
    assert "200" not in write["responses"]  # only the status the route answers
    assert write["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Conflict"
    }


async def test_an_app_opened_by_the_caller_is_left_to_it(tmp_path: Path) -> None:
    async with Todo(f"sqlite:///{tmp_path}") as todo:
        api = make_api(todo)
        async with api.router.lifespan_context(api):
            pass
        assert todo.is_open  # not closed by the lifespan: its opener closes it
