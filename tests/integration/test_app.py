"""The application object on each backend: one declaration, opened from a URL, with
read-your-writes across its read models, status, rebuild, reopening and two processes'
worth of apps taking turns on the projections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cqrskit import (
    Aggregate,
    App,
    Command,
    ConcurrencyError,
    ConfigurationError,
    Event,
    Projection,
    Query,
    QueryResult,
    RecordedEvent,
    SqlTx,
    command,
    handles,
    new_id,
    query,
)

# -- a small to-do app ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskAdded(Event):
    title: str


@dataclass(frozen=True)
class TaskDone(Event):
    pass


class Task(Aggregate):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.title = ""
        self.done = False

    def add(self, title: str) -> None:
        if not title.strip():
            raise ValueError("a task needs a title")
        self.record(TaskAdded(title))

    def finish(self) -> None:
        if not self.done:
            self.record(TaskDone())

    def apply(self, event: Event) -> None:
        match event:
            case TaskAdded(title=title):
                self.title = title
            case TaskDone():
                self.done = True


@dataclass(frozen=True)
class AddTask(Command):
    title: str


@dataclass(frozen=True)
class FinishTask(Command):
    task_id: str
    version: int


@dataclass(frozen=True)
class Note(Command[int]):
    """Appended without an aggregate (App.append)."""

    title: str


@dataclass(frozen=True)
class OpenTasks(Query[list[str]]):
    pass


@dataclass(frozen=True)
class CountDone(Query[int]):
    pass


class TaskList(Projection):
    name = "tasks"
    tables = ("tasks",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, title TEXT NOT NULL,"
            " done INTEGER NOT NULL DEFAULT 0, position BIGINT NOT NULL)"
        )

    @handles(TaskAdded)
    def on_added(self, tx: SqlTx, event: TaskAdded, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO tasks (id, title, position) VALUES (?, ?, ?)",
            (record.aggregate_id, event.title, record.position),
        )

    @handles(TaskDone)
    def on_done(self, tx: SqlTx, event: TaskDone, record: RecordedEvent) -> None:
        tx.execute("UPDATE tasks SET done = 1 WHERE id = ?", (record.aggregate_id,))


class Todo(App):
    events = (TaskAdded, TaskDone)
    projections = (TaskList(),)

    @command(AddTask)
    async def add_task(self, cmd: AddTask) -> str:
        task = Task(new_id())
        task.add(cmd.title)
        await self.repository(Task).save(task)
        return task.id

    @command(FinishTask, retry_on_conflict=True)  # a client's stale version is never retried
    async def finish_task(self, cmd: FinishTask) -> int:
        task = await self.repository(Task).get(cmd.task_id, expected_version=cmd.version)
        task.finish()
        await self.repository(Task).save(task)
        return task.version

    @command(Note)
    async def note(self, cmd: Note) -> int:
        result = await self.append(f"task-note{cmd.title}", [TaskAdded(cmd.title)])
        return result.version

    @query(OpenTasks, reads=[TaskList])
    def open_tasks(self, q: OpenTasks, tx: SqlTx) -> list[str]:
        return [
            r[0] for r in tx.fetchall("SELECT title FROM tasks WHERE done = 0 ORDER BY position")
        ]

    @query(CountDone)
    async def count_done(self, q: CountDone) -> QueryResult[int]:
        """A coroutine handler: anything goes, it makes its own answer."""

        def count(tx: SqlTx) -> tuple[int, int]:
            row = tx.fetchone("SELECT count(*) FROM tasks WHERE done = 1")
            return (0 if row is None else int(row[0])), 0

        value, _ = await self.db.read(count)
        return QueryResult(value, await self.store.head_position())


# -- one URL per backend -------------------------------------------------------------------


@pytest.fixture
async def todo(url: str) -> AsyncIterator[Todo]:
    async with Todo(url, min_position_timeout=5) as app:
        yield app


async def test_commands_and_queries_read_their_writes(todo: Todo) -> None:
    first = await todo.dispatch(AddTask("milk"))
    second = await todo.dispatch(AddTask("bread"))
    assert second.position > first.position
    answer = await todo.ask(OpenTasks(), min_position=second.position)
    assert answer.value == ["milk", "bread"]
    assert answer.position >= second.position
    done = await todo.dispatch(FinishTask(first.value, version=1))
    assert done.value == 2
    assert (await todo.ask(OpenTasks(), min_position=done.position)).value == ["bread"]
    await todo.wait_for(["tasks"], done.position)
    counted = await todo.ask(CountDone())
    assert counted.value == 1
    assert counted.position == done.position


async def test_an_append_without_an_aggregate_moves_the_commands_position(todo: Todo) -> None:
    await todo.dispatch(AddTask("milk"))
    noted = await todo.dispatch(Note("jam"))
    assert noted.value == 1
    assert noted.position == await todo.store.head_position()
    answer = await todo.ask(OpenTasks(), min_position=noted.position)
    assert answer.value == ["milk", "jam"]


async def test_a_stale_version_is_a_conflict(todo: Todo) -> None:
    added = await todo.dispatch(AddTask("milk"))
    await todo.dispatch(FinishTask(added.value, version=1))
    with pytest.raises(ConcurrencyError):
        await todo.dispatch(FinishTask(added.value, version=1))


async def test_status_and_rebuild(todo: Todo) -> None:
    last = None
    for title in ("a", "b", "c"):
        last = await todo.dispatch(AddTask(title))
    assert last is not None
    await todo.wait_for(["tasks"], last.position)
    (status,) = await todo.status()
    assert (status.name, status.position, status.lag_events) == ("tasks", last.position, 0)
    seen: list[tuple[str, int]] = []
    (result,) = await todo.rebuild(on_progress=lambda name, p: seen.append((name, p.done)))
    assert result.events == 3
    assert seen[-1] == ("tasks", 3)
    assert (await todo.ask(OpenTasks())).value == ["a", "b", "c"]


async def test_the_app_reopens_on_what_it_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"
    async with Todo(url) as app:
        added = await app.dispatch(AddTask("milk"))
    async with Todo(url) as app:
        answer = await app.ask(OpenTasks(), min_position=added.position)
        assert answer.value == ["milk"]
        assert app.directory == tmp_path


async def test_an_api_only_app_reads_what_a_worker_app_projects(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}"
    async with Todo(url) as worker, Todo(url, run_projections=False) as api:
        added = await api.dispatch(AddTask("milk"))
        assert (await api.ask(OpenTasks(), min_position=added.position)).value == ["milk"]
        assert [s.state for s in await api.status()] == ["running"]
        assert worker.runner.position("tasks") == added.position


async def test_nothing_is_opened_before_open_and_misuse_is_explained(tmp_path: Path) -> None:
    app = Todo(f"sqlite:///{tmp_path / 'never'}")
    with pytest.raises(ConfigurationError, match="not open"):
        _ = app.store
    assert not (tmp_path / "never").exists()
    for bad in ("mysql://x", "sqlite://relative", "memory://what"):
        with pytest.raises(ConfigurationError):
            async with Todo(bad):
                pass
    with pytest.raises(ConfigurationError, match="no read model named 'nope'"):
        app.projection("nope")


def test_handlers_are_checked_when_declared() -> None:
    with pytest.raises(ConfigurationError, match="must be async def"):

        class SyncCommand(App):
            @command(AddTask)
            def add(self, cmd: AddTask) -> None:  # type: ignore[type-var]
                pass

    with pytest.raises(ConfigurationError, match="names the read models"):

        class Unnamed(App):
            @query(OpenTasks)
            def open_tasks(self, q: OpenTasks, tx: SqlTx) -> list[str]:
                return []
