"""The application object: an app's events, handlers and read models, opened from a URL.

::

    class Todo(App):
        events = [TaskAdded, TaskDone]
        projections = [TaskList()]

        @command(AddTask)
        async def add_task(self, cmd: AddTask) -> str:
            task = Task.add(new_id(), cmd.title)
            await self.repository(Task).save(task)
            return task.id

        @query(ListTasks, reads=[TaskList])
        def list_tasks(self, query: ListTasks, tx: SqlTx) -> list[str]:
            return [row[0] for row in tx.fetchall("SELECT title FROM tasks")]

    app = Todo("sqlite:///data")          # nothing is opened yet
    async with app:                       # store, read database, projections running
        added = await app.dispatch(AddTask("milk"))
        titles = await app.ask(ListTasks(), min_position=added.position)

Handlers are methods: their dependencies are the application's (``self.store``,
``self.db``, ``self.repository(...)``) and whatever a subclass's ``__init__`` was given
(settings, services), never a global. A query handler either reads the read models it
names (``reads=``) synchronously inside one read transaction, and its answer's position
is theirs, read in the same transaction; or is a coroutine method for anything else.

Opening (``async with app`` or :meth:`App.open`) opens the backend of the URL (see
:mod:`cqrskit.connect`), creates the read models and, unless ``run_projections`` is off
(an API process beside worker processes), starts the runner with the backend's lease: on
SQLite and PostgreSQL any number of processes may run the app, each projection in one
process at a time.

Why this module is long: it is the one object an application declares and uses; each of
its methods is a few lines that hand the work to the module that does it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar, cast

from ._marks import CommandMark, QueryMark, command, query
from ._once import dispatch_once, purge_forever, purge_keys
from .aggregate import Aggregate
from .bus import (
    CommandBus,
    CommandResult,
    Middleware,
    QueryBus,
    QueryResult,
    logging_middleware,
    retry_on_conflict_middleware,
)
from .checkpoints import read_position
from .codec import Codec, Upcaster
from .connect import Backend, Options, open_url
from .context import current_context
from .errors import ConfigurationError, ConsistencyTimeout, PersistenceError
from .eventstore import ANY, AppendResult, EventStore, ExpectedVersion, StreamAppend
from .idempotency import DEFAULT_KEY_TTL, IdempotencyKey
from .lease import Lease
from .messages import Command, Event, Query
from .monitoring import ProjectionStatus, projection_status
from .operations import Operations
from .projection import Projection
from .readside import ReadDatabase, create_read_models
from .rebuild import RebuildProgress, RebuildResult, rebuild
from .repository import Repository
from .runner import ProjectionRunner
from .sql import SqlTx

__all__ = ["App", "command", "query"]

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


class App:
    """See the module docstring. Declare ``events``, ``upcasters``, ``projections`` (read
    models) and ``inline`` (write-model projections, run in each append's transaction) as
    class attributes, or set them in ``__init__`` before opening."""

    events: ClassVar[Sequence[type[Event]]] = ()
    upcasters: ClassVar[Sequence[tuple[str, int, Upcaster]]] = ()
    """``(event type name, from schema version, function)``: see :class:`~cqrskit.Codec`."""
    projections: Sequence[Projection] = ()
    inline: Sequence[Projection] = ()

    _marks: ClassVar[dict[str, CommandMark | QueryMark]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        marks: dict[str, CommandMark | QueryMark] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                mark = getattr(value, "__cqrskit_handles__", None)
                if isinstance(mark, CommandMark | QueryMark):
                    marks[name] = mark
        cls._marks = marks

    def __init__(
        self,
        url: str = "memory://",
        *,
        read_url: str | None = None,
        run_projections: bool = True,
        middleware: Sequence[Middleware] = (),
        batch_size: int = 500,
        lease_interval: float = 1.0,
        min_position_timeout: float = 5.0,
        options: Options | None = None,
        idempotency_ttl: float = DEFAULT_KEY_TTL,
    ) -> None:
        """Nothing is opened here. ``middleware`` wraps every command and query, inside
        the logging and outside the retry on conflicts. ``idempotency_ttl``: seconds an
        idempotency key is kept (see :meth:`dispatch`)."""
        self.url = url
        self.read_url = read_url
        self.run_projections = run_projections
        self.batch_size = batch_size
        self.lease_interval = lease_interval
        self.min_position_timeout = min_position_timeout
        self.options = options or Options()
        self.idempotency_ttl = idempotency_ttl
        self.commands = CommandBus()
        self.commands.use(logging_middleware(), *middleware, retry_on_conflict_middleware())
        self.queries = QueryBus()
        self.queries.use(*middleware)
        self._reads: dict[type, tuple[str, ...]] = {}
        self._register()
        self._backend: Backend | None = None
        self._runner: ProjectionRunner | None = None
        self._operations: Operations | None = None
        self._running = False
        self._purger: asyncio.Task[None] | None = None

    def configure(self, *, url: str | None = None, read_url: str | None = None) -> None:
        """Point the app at other databases (a command line's ``--url``), before opening."""
        if self._backend is not None:
            raise ConfigurationError("configure the app before opening it")
        if url is not None:
            self.url = url
        if read_url is not None:
            self.read_url = read_url

    # -- handlers -------------------------------------------------------------------------------

    def _register(self) -> None:
        for name, mark in self._marks.items():
            handler = getattr(self, name)
            if isinstance(mark, CommandMark):
                self.commands.register(
                    cast(Any, mark.message_type), handler, retry_on_conflict=mark.retry_on_conflict
                )
            elif inspect.iscoroutinefunction(handler):
                self.queries.register(mark.message_type, self._async_query(handler))
                self._reads[mark.message_type] = mark.reads
            else:
                self.queries.register(mark.message_type, self._sync_query(handler, mark.reads))
                self._reads[mark.message_type] = mark.reads

    def _sync_query(
        self, handler: Callable[[Any, SqlTx], Any], reads: tuple[str, ...]
    ) -> Callable[[Any], Awaitable[QueryResult[Any]]]:
        async def run(message: Any) -> QueryResult[Any]:
            def read(tx: SqlTx) -> QueryResult[Any]:
                # The rows and the checkpoints come from one snapshot: the position
                # describes exactly what the handler read.
                position = min(read_position(tx, name) for name in reads)
                return QueryResult(handler(message, tx), position)

            return await self.db.read(read)

        return run

    @staticmethod
    def _async_query(
        handler: Callable[[Any], Awaitable[Any]],
    ) -> Callable[[Any], Awaitable[QueryResult[Any]]]:
        async def run(message: Any) -> QueryResult[Any]:
            answer = await handler(message)
            return answer if isinstance(answer, QueryResult) else QueryResult(answer, 0)

        return run

    def reads(self, query_type: type[Query[Any]]) -> tuple[str, ...]:
        """The read models a query reads (``X-Min-Position`` waits for them)."""
        return self._reads.get(query_type, ())

    async def dispatch(
        self,
        message: Command[T],
        *,
        correlation_id: str | None = None,
        extra: dict[str, str] | None = None,
        idempotency: IdempotencyKey | None = None,
    ) -> CommandResult[T]:
        """Run a command; ``result.position`` is its read-your-writes token.

        With ``idempotency``, once per key and caller (:mod:`cqrskit.idempotency`): the
        command's events, the key and the answer are stored in one transaction, and a
        repeat is answered from there (``result.replayed``) without running."""
        if idempotency is not None:
            return await dispatch_once(
                self.commands, self.store, message, idempotency, ttl=self.idempotency_ttl,
                correlation_id=correlation_id, extra=extra,
            )  # fmt: skip
        return await self.commands.dispatch(message, correlation_id=correlation_id, extra=extra)

    async def ask(self, message: Query[T], *, min_position: int | None = None) -> QueryResult[T]:
        """Answer a query; with ``min_position``, once its read models have reached it
        (within ``min_position_timeout``, else :class:`~cqrskit.errors.ConsistencyTimeout`)."""
        if min_position is not None:
            await self.wait_for(self.reads(type(message)), min_position)
        return await self.queries.ask(message)

    # -- what opening gives ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._backend is not None

    @property
    def store(self) -> EventStore:
        return self._opened().store

    @property
    def db(self) -> ReadDatabase:
        return self._opened().db

    @property
    def lease(self) -> Lease | None:
        """The backend's lease (one holder per name across processes), as the runner and
        the relay use it; None on a backend without one."""
        return self._opened().lease

    @property
    def directory(self) -> Path | None:
        """Where the backend keeps its files (SQLite), else None."""
        return self._opened().directory

    @property
    def runner(self) -> ProjectionRunner:
        if self._runner is None:
            raise self._not_open()
        return self._runner

    @property
    def operations(self) -> Operations:
        """Operator actions on the read models, from any process (:mod:`cqrskit.operations`):
        pause, resume, retry or skip parked events, restart, rewind; parked events and
        the actions' history."""
        if self._operations is None:
            runner = self._runner if self._running else None
            self._operations = Operations(
                self.store,
                self.db,
                self.projections,
                nudge=None if runner is None else runner.nudge,
            )
        return self._operations

    def repository(self, aggregate: type[A], snapshot_every: int | None = None) -> Repository[A]:
        return Repository.for_type(self.store, aggregate, snapshot_every)

    async def append(
        self, stream_id: str, events: Sequence[Event], expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        """Append to a stream without an aggregate, from a command handler: as a
        repository's save does, the events carry the command's metadata (correlation id)
        and the command's position (its read-your-writes token) moves to theirs. In a
        command run once per idempotency key, held like a repository's save."""
        ctx = current_context()
        if ctx is not None and ctx.held is not None:
            ctx.held.append(StreamAppend(stream_id, list(events), expected_version))
            return AppendResult(0, 0)
        result = await self.store.append(
            stream_id, events, expected_version, ctx.metadata() if ctx is not None else None
        )
        if ctx is not None:
            ctx.saw(result.position)
        return result

    def projection(self, name: str) -> Projection:
        for p in self.projections:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.projections)
        raise ConfigurationError(f"no read model named {name!r} (known: {names})")

    def _opened(self) -> Backend:
        if self._backend is None:
            raise self._not_open()
        return self._backend

    def _not_open(self) -> ConfigurationError:
        return ConfigurationError(
            f"{type(self).__name__} is not open: use `async with app:` or `await app.open()`"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self, *, run_projections: bool | None = None) -> None:
        """Open the backend, then :meth:`opened` (a subclass's hook), then create the read
        models and (unless ``run_projections`` is False) start the projections."""
        if self._backend is not None:
            raise ConfigurationError(f"{type(self).__name__} is already open")
        run = self.run_projections if run_projections is None else run_projections
        codec = Codec(self.events)
        for type_name, from_version, fn in self.upcasters:
            codec.add_upcaster(type_name, from_version, fn)
        self._backend = await open_url(
            self.url, codec, list(self.inline), read_url=self.read_url, options=self.options
        )
        try:
            self._runner = ProjectionRunner(
                self.store,
                self.db,
                list(self.projections),
                batch_size=self.batch_size,
                lease=self._backend.lease,
                lease_interval=self.lease_interval,
            )
            await self.opened()
            self._purger = asyncio.create_task(purge_forever(self.store), name="cqrskit purge")
            if run:
                await self._runner.start()  # creates the read models first
                self._running = True
            else:
                # An API process that runs no projection: its reads answer 404 or an
                # empty page, not an error, before any worker has run.
                await create_read_models(self.db, list(self.projections))
        except BaseException:
            await self.close()
            raise

    async def opened(self) -> None:
        """Called once the store and read database are open, before the projections
        start: override to prepare what handlers need (keys, caches)."""

    async def stop_projections(self) -> None:
        """Let each projection finish its batch and stop following the log; the app stays
        open (its reads then wait on whatever other processes project)."""
        if self._running and self._runner is not None:
            self._running = False
            self._operations = None
            await self._runner.stop()

    async def close(self) -> None:
        """Let each projection finish its batch, release the leases, close the databases."""
        backend, self._backend = self._backend, None
        purger, self._purger = self._purger, None
        if purger is not None:
            purger.cancel()
            await asyncio.gather(purger, return_exceptions=True)
        try:
            await self.stop_projections()
        finally:
            self._runner = None
            self._operations = None
            if backend is not None:
                try:
                    if backend.lease is not None:
                        await backend.lease.close()  # no lock survives this process
                finally:
                    try:
                        await backend.store.close()
                    finally:
                        await backend.db.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- consistency and operations -------------------------------------------------------------

    async def wait_for(
        self, read_models: Sequence[str | type[Projection] | Projection], position: int
    ) -> None:
        """Wait until each read model (by name, class or instance) has processed
        ``position``, all within one budget of ``min_position_timeout`` seconds; raises
        ``ConsistencyTimeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.min_position_timeout
        for name in (r if isinstance(r, str) else r.name for r in read_models):
            remaining = max(0.0, deadline - loop.time())
            try:
                await self.runner.wait_for(name, position, remaining)
            except PersistenceError as exc:  # the read database is unavailable: not caught up
                raise ConsistencyTimeout(name, position, 0, remaining) from exc

    async def purge_idempotency_keys(self) -> int:
        """Delete expired idempotency keys now (an open app also does every 5 minutes)."""
        return await purge_keys(self.store)

    async def status(self) -> list[ProjectionStatus]:
        """Position, head, lag and state of each read model (from any process)."""
        if self._running:
            return await self.runner.status()
        return await projection_status(self.store, self.db, [p.name for p in self.projections])

    async def rebuild(
        self,
        name: str | None = None,
        *,
        on_progress: Callable[[str, RebuildProgress], None] | None = None,
    ) -> list[RebuildResult]:
        """Rebuild one read model (or all) from the log, blue/green: safe while serving."""
        targets = [self.projection(name)] if name else list(self.projections)
        results = []
        for projection in targets:
            report = None
            if on_progress is not None:
                report = _reporter(on_progress, projection.name)
            results.append(
                await rebuild(
                    self.store, self.db, projection, on_progress=report, batch_size=self.batch_size
                )
            )
        return results


def _reporter(
    on_progress: Callable[[str, RebuildProgress], None], name: str
) -> Callable[[RebuildProgress], None]:
    return lambda progress: on_progress(name, progress)
