"""The workload on cqrskit: aggregates, a command bus and a projection runner.

Commands go through :class:`cqrskit.CommandBus` (handlers: load, decide, save through a
:class:`cqrskit.Repository`); the read model is a :class:`cqrskit.Projection` applied by
:class:`cqrskit.runner.ProjectionRunner` (catch-up, lag) or :func:`cqrskit.rebuild.rebuild`.
Concurrent clients are asyncio tasks (group commit batches their appends).

Every module is imported here, before any measurement: imported inside one, its compiling
(this environment sets PYTHONDONTWRITEBYTECODE) would count in that figure's time and
memory, as eventsourcing's imports do not.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cqrskit import (
    NO_STREAM,
    Aggregate,
    Codec,
    Command,
    CommandBus,
    ConsistencyTimeout,
    Event,
    EventStore,
    Projection,
    ProjectionRunner,
    ReadDatabase,
    RebuildProgress,
    RecordedEvent,
    Repository,
    SqlTx,
    create_read_models,
    handles,
    rebuild,
)
from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore
from cqrskit.connect import Options, ReadDurability, check_read_durability

from .config import CQRSKIT_PG_POOLS, READ_DURABILITY_ENV
from .measure import MIN_LAG_SAMPLES, LagProbe, Target
from .workload import READ_MODEL_DDL, ClientScript, Op, Publish, Register, history

# -- domain ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRegistered(Event):
    user_id: str
    email: str


@dataclass(frozen=True)
class PostPublished(Event):
    post_id: str
    author_id: str
    content: str


@dataclass(frozen=True)
class UserFollowed(Event):
    follower_id: str
    followee_id: str


class User(Aggregate):
    stream_prefix = "user"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.email = ""

    def register(self, email: str) -> None:
        if self.exists:
            raise ValueError("already registered")
        self.record(UserRegistered(self.id, email))

    def apply(self, event: Event) -> None:
        match event:
            case UserRegistered(email=email):
                self.email = email
            case _:
                super().apply(event)


class Post(Aggregate):
    stream_prefix = "post"

    def publish(self, author: User, content: str) -> None:
        if not author.exists:
            raise LookupError(author.id)
        self.record(PostPublished(self.id, author.id, content))

    def apply(self, event: Event) -> None:
        if not isinstance(event, PostPublished):
            super().apply(event)


class FollowRelation(Aggregate):
    stream_prefix = "follow"

    def follow(self, follower_id: str, followee: User) -> None:
        if self.exists:
            return  # following twice changes nothing
        if not followee.exists:
            raise LookupError(followee.id)
        self.record(UserFollowed(follower_id, followee.id))

    def apply(self, event: Event) -> None:
        if not isinstance(event, UserFollowed):
            super().apply(event)


@dataclass(frozen=True)
class RegisterUser(Command):
    user_id: str
    email: str


@dataclass(frozen=True)
class PublishPost(Command):
    post_id: str
    author_id: str
    content: str


@dataclass(frozen=True)
class FollowUser(Command):
    follower_id: str
    followee_id: str


def codec() -> Codec:
    return Codec([UserRegistered, PostPublished, UserFollowed])


def command_for(op: Op) -> Command:
    if isinstance(op, Register):
        return RegisterUser(str(op.user_id), op.email)
    if isinstance(op, Publish):
        return PublishPost(str(op.post_id), str(op.author_id), op.content)
    return FollowUser(str(op.follower_id), str(op.followee_id))


def event_for(op: Op) -> tuple[str, Event]:
    """The stream and event an operation records (for seeding)."""
    if isinstance(op, Register):
        return User.stream_id(str(op.user_id)), UserRegistered(str(op.user_id), op.email)
    if isinstance(op, Publish):
        event = PostPublished(str(op.post_id), str(op.author_id), op.content)
        return Post.stream_id(str(op.post_id)), event
    relation = f"{op.follower_id}-{op.followee_id}"
    return FollowRelation.stream_id(relation), UserFollowed(
        str(op.follower_id), str(op.followee_id)
    )


def bootstrap(store: EventStore) -> CommandBus:
    """The one place the command side is wired."""
    users = Repository.for_type(store, User)
    posts = Repository.for_type(store, Post)
    follows = Repository.for_type(store, FollowRelation)

    async def register_user(cmd: RegisterUser) -> None:
        user = User(cmd.user_id)  # a new stream: saved expecting NO_STREAM
        user.register(cmd.email)
        await users.save(user)

    async def publish_post(cmd: PublishPost) -> None:
        author = await users.get(cmd.author_id)
        post = Post(cmd.post_id)
        post.publish(author, cmd.content)
        await posts.save(post)

    async def follow_user(cmd: FollowUser) -> None:
        followee = await users.get(cmd.followee_id)
        relation = FollowRelation(f"{cmd.follower_id}-{cmd.followee_id}")
        relation.follow(cmd.follower_id, followee)
        await follows.save(relation)

    bus = CommandBus()
    bus.register(RegisterUser, register_user)
    bus.register(PublishPost, publish_post)
    bus.register(FollowUser, follow_user)
    return bus


# -- read model --------------------------------------------------------------------------------


class UsersProjection(Projection):
    name = "bench_users"
    pipelined = True  # handlers only write: PostgreSQL may pipeline a batch
    tables = ("bench_users",)

    def create_schema(self, tx: SqlTx) -> None:
        for ddl in READ_MODEL_DDL:
            tx.execute(ddl)

    @handles(UserRegistered)
    def on_registered(self, tx: SqlTx, event: UserRegistered, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO bench_users (id, email) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            (event.user_id, event.email),
        )

    @handles(PostPublished)
    def on_published(self, tx: SqlTx, event: PostPublished, record: RecordedEvent) -> None:
        tx.execute(
            "UPDATE bench_users SET post_count = post_count + 1 WHERE id = ?", (event.author_id,)
        )

    @handles(UserFollowed)
    def on_followed(self, tx: SqlTx, event: UserFollowed, record: RecordedEvent) -> None:
        tx.execute(
            "UPDATE bench_users SET following_count = following_count + 1 WHERE id = ?",
            (event.follower_id,),
        )
        tx.execute(
            "UPDATE bench_users SET follower_count = follower_count + 1 WHERE id = ?",
            (event.followee_id,),
        )


class ParkingUsersProjection(UsersProjection):
    """The same read model with ``on_failure = "park"``: what parking costs when nothing
    fails (``catchup_park_ratio``)."""

    name = "bench_users_park"
    on_failure = "park"


# -- the benchmark driver ----------------------------------------------------------------------


async def open_store(target: Target, *, durable: bool = True) -> EventStore:
    """The event store; ``durable=False`` (seeding only, never measured) skips the fsync
    of each commit, which is what makes seeding a 1,000,000-event log take minutes."""
    if target.backend == "sqlite":
        sync = "FULL" if durable else "OFF"
        return await SqliteEventStore.open(target.write, codec(), synchronous=sync)
    url = target.write
    if not durable:
        url += ("&" if "?" in url else "?") + "options=-c%20synchronous_commit%3Doff"
    # The pool an application gets by default (CQRSKIT_PG_POOLS). A service fails fast when its pool
    # is full (1 s, then 503); a benchmark waits as eventsourcing's pool does: seeders of
    # several systems may share the server's connections for a while.
    return await PostgresEventStore.open(
        url, codec(), pool_max=CQRSKIT_PG_POOLS.events, pool_timeout=30.0
    )


def read_durability() -> ReadDurability:
    """The read database's durability measured: ``--read-durability`` (passed in the
    environment), else cqrskit's default (relaxed: SQLite ``synchronous=NORMAL``,
    PostgreSQL ``synchronous_commit=off`` in its transactions; strict: FULL, on)."""
    chosen = os.environ.get(READ_DURABILITY_ENV) or Options().read_durability
    return check_read_durability(chosen)


def open_read_db(target: Target) -> ReadDatabase:
    if target.backend == "sqlite":
        return SqliteDatabase(target.read, durability=read_durability())
    return PostgresDatabase(
        target.read, durability=read_durability(), pool_max=CQRSKIT_PG_POOLS.read, pool_timeout=30.0
    )


async def _catch_up(
    store: EventStore, db: ReadDatabase, projection: Projection, n_events: int, cap: float
) -> float:
    """Events/s of one projection catching up on ``n_events`` from an empty read model."""
    runner = ProjectionRunner(store, db, [projection], batch_size=1000)
    start = time.perf_counter()
    await runner.start()
    try:
        reached = await runner.wait_for(projection.name, n_events, timeout=cap)
    except ConsistencyTimeout:
        reached = runner.position(projection.name)
    elapsed = time.perf_counter() - start
    await runner.stop()
    return min(reached, n_events) / elapsed


class CqrskitSystem:
    name = "cqrskit"

    def __init__(self, target: Target) -> None:
        self.target = target

    def close(self) -> None:
        pass

    def _run(self, fn: Callable[[EventStore], Awaitable[Any]], *, durable: bool = True) -> Any:
        async def main() -> Any:
            store = await open_store(self.target, durable=durable)
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(main())

    def seed(self, n_events: int) -> None:
        async def seed(store: EventStore) -> None:
            pending: list[Awaitable[Any]] = []
            for op in history(n_events):
                stream, event = event_for(op)
                pending.append(store.append(stream, [event], NO_STREAM))
                if len(pending) == 2000:  # one group commit takes them all
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)

        self._run(seed, durable=False)

    def commands(self, clients: int, seconds: float) -> float:
        async def measure(store: EventStore) -> float:
            bus = bootstrap(store)
            counts = [0] * clients
            go = asyncio.Event()
            deadline = 0.0

            async def client(index: int) -> None:
                script = ClientScript(index)
                await go.wait()
                done = 0
                while time.perf_counter() < deadline:
                    await bus.dispatch(command_for(script.next()))
                    done += 1
                counts[index] = done

            tasks = [asyncio.create_task(client(i)) for i in range(clients)]
            await asyncio.sleep(0)
            began = time.perf_counter()
            deadline = began + seconds
            go.set()
            await asyncio.gather(*tasks)
            return sum(counts) / (time.perf_counter() - began)

        return float(self._run(measure))

    def catchup(self, n_events: int, cap: float) -> float:
        async def measure(store: EventStore) -> float:
            db = open_read_db(self.target)
            try:
                return await _catch_up(store, db, UsersProjection(), n_events, cap)
            finally:
                await db.close()

        return float(self._run(measure))

    def catchup_policies(self, n_events: int, cap: float) -> dict[str, float]:
        """Catch-up with ``on_failure = "stop"`` and ``"park"``, nothing failing,
        alternated (stop, park, park, stop) on one store and one read database emptied
        between runs: the cost of parking as a ratio."""

        def empty(tx: SqlTx) -> None:  # what the runs before left (the catchup job's too)
            tx.execute("DROP TABLE IF EXISTS bench_users")
            tx.execute("DROP TABLE IF EXISTS cqrskit_parked_bench_users_park")
            tx.execute("DELETE FROM cqrskit_projections")

        async def once(store: EventStore, db: ReadDatabase, projection: Projection) -> float:
            await db.write(empty)
            return await _catch_up(store, db, projection, n_events, cap)

        async def measure(store: EventStore) -> dict[str, float]:
            db = open_read_db(self.target)
            rates: dict[str, list[float]] = {"stop": [], "park": []}
            try:
                await create_read_models(db, ())  # the checkpoint table, for empty()
                for policy in ("stop", "park", "park", "stop"):
                    projection = UsersProjection() if policy == "stop" else ParkingUsersProjection()
                    rates[policy].append(await once(store, db, projection))
            finally:
                await db.close()
            stop, park = statistics.mean(rates["stop"]), statistics.mean(rates["park"])
            return {
                "catchup_stop_events_per_s": stop,
                "catchup_park_events_per_s": park,
                "catchup_park_ratio": park / stop,
            }

        result: dict[str, float] = self._run(measure)
        return result

    def rebuild(self, n_events: int, cap: float) -> float:
        async def measure(store: EventStore) -> float:
            db = open_read_db(self.target)
            done = [0]

            def progress(p: RebuildProgress) -> None:
                done[0] = p.done

            try:
                start = time.perf_counter()
                task = asyncio.ensure_future(
                    rebuild(store, db, UsersProjection(), on_progress=progress)
                )
                try:
                    result = await asyncio.wait_for(task, cap)
                except TimeoutError:
                    return done[0] / (time.perf_counter() - start)  # measured over the cap
                return result.events / (time.perf_counter() - start)
            finally:
                await db.close()

        return float(self._run(measure))

    def lag(self, samples: int, cap: float) -> list[float]:
        async def measure(store: EventStore) -> list[float]:
            bus = bootstrap(store)
            db = open_read_db(self.target)
            probe = LagProbe(self.target)
            waiter = ThreadPoolExecutor(1, thread_name_prefix="lag-probe")
            runner = ProjectionRunner(store, db, [UsersProjection()], batch_size=1000)
            await runner.start()
            try:
                await bus.dispatch(RegisterUser(str(uuid.uuid4()), "warmup@bench.example"))
                script = ClientScript(0)
                lags: list[float] = []
                loop = asyncio.get_running_loop()
                began = time.perf_counter()
                for _ in range(samples):
                    if time.perf_counter() - began > cap and len(lags) >= MIN_LAG_SAMPLES:
                        break
                    op = script.next()
                    await bus.dispatch(command_for(op))
                    start = time.perf_counter()
                    # Waited for on a thread: the event loop goes on running the runner.
                    lags.append(await loop.run_in_executor(waiter, probe.lag, op, start))
                return lags
            finally:
                await runner.stop()
                waiter.shutdown()
                probe.close()
                await db.close()

        result: list[float] = self._run(measure)
        return result
