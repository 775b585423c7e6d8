"""The one place where the service's objects are built and wired.

``bootstrap(settings)`` opens the backends (SQLite files in the data dir, or PostgreSQL
when URLs are given), builds the codec, the buses with every handler registered
explicitly, the projections and their runner (not started: the caller decides whether
this process runs them). Importing this module opens nothing.

Scale-out on PostgreSQL: any number of ``serve`` and ``worker`` processes may run the
projections against the same databases. Each runner then holds a lease per projection
(:class:`cqrskit.backends.postgres.PgAdvisoryLease`, a session advisory lock in the read
database): one process applies a projection, the others stand by, and when the holder dies
its session ends, the lock frees itself and a standby takes over within about one
``lease_interval``.
On SQLite, ``serve`` and ``worker`` processes on one data directory take turns the same
way, on lock files beside ``read.db`` (:class:`cqrskit.backends.sqlite.SqliteLease`: the
kernel frees a dead holder's lock at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from cqrskit import (
    Codec,
    CommandBus,
    ConfigurationError,
    ConsistencyTimeout,
    EventStore,
    Lease,
    PersistenceError,
    Projection,
    ProjectionRunner,
    ProjectionStatus,
    QueryBus,
    ReadDatabase,
    create_read_models,
    logging_middleware,
    projection_status,
    retry_on_conflict_middleware,
    timing_middleware,
)
from cqrskit.backends.sqlite import SqliteDatabase, SqliteEventStore, SqliteLease

from ..application.commands import (
    CreatePost,
    FollowUser,
    RegisterUser,
    UnfollowUser,
    UpdateProfile,
)
from ..application.handlers import CommandHandlers
from ..application.projections import Follows, Posts, UserProfiles
from ..application.queries import (
    Authenticate,
    GetUser,
    ListFollowers,
    ListFollowing,
    ListPosts,
)
from ..application.throttle import LoginThrottle
from ..application.tokens import TokenService
from ..domain import ALL_EVENTS, hash_password
from .metrics import Metrics
from .queries import ReadQueries
from .read_models import SqlFollowRows, SqlPostRows, SqlProfileRows
from .secret import load_or_create_secret
from .settings import Settings
from .write_model import TokenKeyTable, UsersTable, read_token_key

__all__ = ["Container", "bootstrap", "open_backends", "read_models"]


LEASE_INTERVAL = 1.0
"""Seconds between lease renewals of the active process and tries of the standbys: the
takeover delay after the holder dies is about this (plus one batch)."""


class ClosableLease(Lease, Protocol):
    """A :class:`~cqrskit.Lease` that the container closes."""

    async def close(self) -> None: ...


def read_models() -> list[Projection]:
    """The read-side projections, in the order status lists them."""
    return [UserProfiles(SqlProfileRows()), Posts(SqlPostRows()), Follows(SqlFollowRows())]


@dataclass
class Container:
    """Everything one process of the service uses; ``close()`` releases it all."""

    settings: Settings
    store: EventStore
    db: ReadDatabase
    codec: Codec
    commands: CommandBus
    queries: QueryBus
    projections: list[Projection]
    runner: ProjectionRunner
    tokens: TokenService
    metrics: Metrics
    lease: ClosableLease | None = None
    """The projections' lease: closed after the runner has stopped."""
    runner_started: bool = field(default=False)

    def projection(self, name: str) -> Projection:
        for p in self.projections:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in self.projections)
        raise ConfigurationError(f"no read model named {name!r} (known: {names})")

    async def prepare_read_side(self) -> None:
        """Create the checkpoint table and the read models' tables, unless present.

        Processes starting together take turns (``ReadDatabase.write_schema``), as the
        runner's own creation does. An API process that runs no projection calls it too,
        so that its reads answer 404 or an empty page, not an error, before any worker has
        run.
        """
        await create_read_models(self.db, self.projections)

    async def open(self, run_projections: bool) -> None:
        """Start the projections, or (an API process only) prepare the read side."""
        if run_projections:
            await self.start_projections()
        else:
            await self.prepare_read_side()

    async def start_projections(self) -> None:
        await self.prepare_read_side()
        await self.runner.start()
        self.runner_started = True

    async def stop_projections(self) -> None:
        """Lets each projection finish its current batch."""
        if self.runner_started:
            self.runner_started = False
            await self.runner.stop()

    async def status(self) -> list[ProjectionStatus]:
        if self.runner_started:
            return await self.runner.status()
        return await projection_status(self.store, self.db, [p.name for p in self.projections])

    async def wait_for(self, names: list[str], position: int) -> None:
        """Wait until each named projection has processed ``position``, within one budget
        of ``settings.min_position_timeout`` seconds; raises ``ConsistencyTimeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.min_position_timeout
        for name in names:
            remaining = max(0.0, deadline - loop.time())
            try:
                await self.runner.wait_for(name, position, remaining)
            except PersistenceError as exc:  # the read database is unavailable: not caught up
                raise ConsistencyTimeout(name, position, 0, remaining) from exc

    async def close(self) -> None:
        try:
            await self.stop_projections()  # releases the leases it holds
        finally:
            try:
                if self.lease is not None:
                    await self.lease.close()  # ends its session: no lock survives us
            finally:
                try:
                    await self.store.close()
                finally:
                    await self.db.close()


async def open_backends(
    settings: Settings, codec: Codec, inline: list[Projection]
) -> tuple[EventStore, ReadDatabase]:
    """The event store (with the inline write model) and the read database.

    SQLite files ``write.db``/``read.db`` in the data dir by default; PostgreSQL when
    ``write_url`` and ``read_url`` are set (its modules are imported only then).

    On PostgreSQL the process keeps to ``settings.pg_connections`` connections: the pools
    get the budget less the 3 dedicated connections (the store's NOTIFY and LISTEN, the
    lease of ``_lease_for``), split by ``Settings.pg_pools``; a call that finds its pool
    exhausted for ``settings.pg_pool_timeout`` seconds fails (503), it does not queue.
    """
    if settings.write_url or settings.read_url:
        if not (settings.write_url and settings.read_url):
            raise ConfigurationError("give both --write-url and --read-url, or neither")
        pools = settings.pg_pools()  # refuses a budget too small, before connecting
        try:
            from cqrskit.backends.postgres import PostgresDatabase, PostgresEventStore
        except ImportError as exc:
            raise ConfigurationError(
                f"the PostgreSQL backend is not available in this installation: {exc}"
            ) from exc
        pg_store = await PostgresEventStore.open(
            settings.write_url,
            codec,
            inline=inline,
            pool_min=1,
            pool_max=pools.events,
            pool_timeout=settings.pg_pool_timeout,
        )
        pg_db = PostgresDatabase(
            settings.read_url,
            pool_min=1,
            pool_max=pools.read,
            pool_timeout=settings.pg_pool_timeout,
        )
        return pg_store, pg_db
    data = settings.data_dir
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    sqlite_store = await SqliteEventStore.open(data / "write.db", codec, inline=inline)
    return sqlite_store, SqliteDatabase(data / "read.db")


async def bootstrap(settings: Settings) -> Container:
    codec = Codec(ALL_EVENTS)
    inline: list[Projection] = [UsersTable()]
    if settings.write_url:
        inline.append(TokenKeyTable())  # the deployment's one key (see _token_key)
    store, db = await open_backends(settings, codec, inline)
    try:
        return await _wire(settings, codec, store, db)
    except BaseException:
        await store.close()
        await db.close()
        raise


async def _wire(settings: Settings, codec: Codec, store: EventStore, db: ReadDatabase) -> Container:
    secret = await _token_key(settings, store)
    metrics = Metrics()

    handlers = CommandHandlers(store, settings.scrypt)
    commands = CommandBus()
    commands.use(
        logging_middleware(), timing_middleware(metrics.observe), retry_on_conflict_middleware()
    )
    commands.register(RegisterUser, handlers.register_user)
    # The client's version is the point of PATCH: a conflict is its answer, never retried.
    commands.register(UpdateProfile, handlers.update_profile)
    commands.register(CreatePost, handlers.create_post)
    commands.register(FollowUser, handlers.follow_user, retry_on_conflict=True)
    commands.register(UnfollowUser, handlers.unfollow_user, retry_on_conflict=True)

    dummy_hash = await asyncio.to_thread(hash_password, "not-a-password", settings.scrypt)
    reads = ReadQueries(db, store, dummy_hash, LoginThrottle())
    queries = QueryBus()
    queries.use(timing_middleware(metrics.observe))
    queries.register(GetUser, reads.get_user)
    queries.register(ListPosts, reads.list_posts)
    queries.register(ListFollowers, reads.list_followers)
    queries.register(ListFollowing, reads.list_following)
    queries.register(Authenticate, reads.authenticate)

    projections = read_models()
    lease = _lease_for(settings)
    runner = ProjectionRunner(
        store,
        db,
        projections,
        batch_size=settings.batch_size,
        lease=lease,
        lease_interval=LEASE_INTERVAL,
    )
    return Container(
        settings=settings,
        store=store,
        db=db,
        codec=codec,
        commands=commands,
        queries=queries,
        projections=projections,
        runner=runner,
        tokens=TokenService(secret, settings.token_ttl),
        metrics=metrics,
        lease=lease,
    )


async def _token_key(settings: Settings, store: EventStore) -> bytes:
    """The token signing key: ``SOCIAL_SECRET`` when set; on PostgreSQL the one in the write
    database, shared by every process of the deployment; on SQLite ``secret.key`` in the
    data directory (one machine, one directory)."""
    if settings.secret:
        return settings.secret
    if settings.write_url:
        return await store.query(read_token_key)
    return load_or_create_secret(settings.data_dir)


def _lease_for(settings: Settings) -> ClosableLease:
    """The lease that lets one process at a time run each projection.

    It lives with the read database: that is what a projection writes, so every process
    that could write the same read models meets on the same locks (PostgreSQL: advisory
    locks of the read database, which are per database; SQLite: lock files beside
    ``read.db``), whichever event store feeds them. It connects on first use only.
    """
    if not settings.read_url:
        return SqliteLease(settings.data_dir / "read.db")
    from cqrskit.backends.postgres import PgAdvisoryLease

    return PgAdvisoryLease(settings.read_url)
