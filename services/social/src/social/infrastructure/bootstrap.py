"""The service as one cqrskit application: its events, read models, write model and
handlers, declared on :class:`SocialApp`; the URL comes from the settings.

``SocialApp(settings)`` opens nothing; ``async with app`` (or ``await app.open()``) opens
SQLite files in the data dir, or PostgreSQL when URLs are given, and runs the projections
unless ``run_projections=False`` (an API process beside ``worker`` processes).

Scale-out: any number of ``serve`` and ``worker`` processes may run on the same
databases. Each holds a lease per projection (PostgreSQL: a session advisory lock in the
read database; SQLite: a lock file beside ``read.db``): one process applies a projection,
the others stand by, and when the holder dies a standby takes over within about one
``lease_interval`` (1 s).
"""

from __future__ import annotations

import asyncio

from cqrskit import (
    App,
    ConfigurationError,
    Options,
    QueryResult,
    command,
    query,
    timing_middleware,
)

from ..application.commands import (
    CreatePost,
    Deleted,
    Following,
    FollowUser,
    ForgetUser,
    PostId,
    RegisterUser,
    UnfollowUser,
    UpdateProfile,
    UserVersion,
)
from ..application.handlers import CommandHandlers
from ..application.projections import Follows, Posts, UserProfiles
from ..application.queries import (
    Authenticate,
    FollowView,
    GetUser,
    ListFollowers,
    ListFollowing,
    ListPosts,
    Page,
    PostView,
    UserView,
)
from ..application.throttle import LoginThrottle
from ..application.tokens import TokenService
from ..domain import ALL_EVENTS, hash_password
from .metrics import Metrics
from .queries import ReadQueries
from .read_models import SqlFollowRows, SqlPostRows, SqlProfileRows
from .secret import load_or_create_secret
from .settings import Settings
from .write_model import TokenKeyTable, UsersTable, read_token_key, user_exists

__all__ = ["SocialApp", "read_models"]


def read_models() -> list[UserProfiles | Posts | Follows]:
    """The read-side projections, in the order status lists them."""
    return [UserProfiles(SqlProfileRows()), Posts(SqlPostRows()), Follows(SqlFollowRows())]


class SocialApp(App):
    events = ALL_EVENTS

    handlers: CommandHandlers
    read_queries: ReadQueries
    tokens: TokenService
    """Set when the app opens (they need its store, read database and token key)."""

    def __init__(self, settings: Settings, *, run_projections: bool = True) -> None:
        if settings.write_url and not 0 < settings.pg_pool_timeout < settings.request_timeout:
            raise ConfigurationError(
                f"pg_pool_timeout (SOCIAL_PG_POOL_TIMEOUT) = {settings.pg_pool_timeout} must be"
                f" positive and shorter than the request timeout ({settings.request_timeout}s)"
            )
        self.settings = settings
        self.metrics = Metrics()
        self.projections = read_models()
        # On PostgreSQL the token key lives in the write database, one per deployment.
        self.inline = [UsersTable(), *([TokenKeyTable()] if settings.write_url else [])]
        super().__init__(
            settings.url(),
            read_url=settings.read_url,
            run_projections=run_projections,
            middleware=[timing_middleware(self.metrics.observe)],
            batch_size=settings.batch_size,
            min_position_timeout=settings.min_position_timeout,
            options=Options(
                connections=settings.pg_connections,
                pool_timeout=settings.pg_pool_timeout,
                read_durability=settings.read_durability,
            ),
        )

    async def opened(self) -> None:
        settings = self.settings
        self.handlers = CommandHandlers(self.store, settings.scrypt, exists=self._user_exists)
        dummy_hash = await asyncio.to_thread(hash_password, "not-a-password", settings.scrypt)
        self.read_queries = ReadQueries(self.db, self.store, dummy_hash, LoginThrottle())
        self.tokens = TokenService(await self._token_key(), settings.token_ttl)

    async def _user_exists(self, user_id: str) -> bool:
        """The write model's row: it goes in the forget's own append, so every process
        stops accepting the user's tokens at once."""
        return await self.store.query(lambda tx: user_exists(tx, user_id))

    async def _token_key(self) -> bytes:
        """``SOCIAL_SECRET`` when set; on PostgreSQL the one in the write database, shared
        by every process of the deployment; on SQLite ``secret.key`` in the data directory
        (one machine, one directory)."""
        if self.settings.secret:
            return self.settings.secret
        if self.directory is None:
            return await self.store.query(read_token_key)
        return load_or_create_secret(self.directory)

    # -- commands: the client's version is the point of PATCH, a conflict its answer -----------

    @command(RegisterUser)
    async def register_user(self, cmd: RegisterUser) -> UserVersion:
        return await self.handlers.register_user(cmd)

    @command(UpdateProfile)
    async def update_profile(self, cmd: UpdateProfile) -> UserVersion:
        return await self.handlers.update_profile(cmd)

    @command(ForgetUser, retry_on_conflict=True)
    async def forget_user(self, cmd: ForgetUser) -> Deleted:
        return await self.handlers.forget_user(cmd)

    @command(CreatePost)
    async def create_post(self, cmd: CreatePost) -> PostId:
        return await self.handlers.create_post(cmd)

    @command(FollowUser, retry_on_conflict=True)
    async def follow_user(self, cmd: FollowUser) -> Following:
        return await self.handlers.follow_user(cmd)

    @command(UnfollowUser, retry_on_conflict=True)
    async def unfollow_user(self, cmd: UnfollowUser) -> Following:
        return await self.handlers.unfollow_user(cmd)

    # -- queries: X-Min-Position waits for the read models each one names ----------------------

    @query(GetUser, reads=[UserProfiles])
    async def get_user(self, q: GetUser) -> QueryResult[UserView]:
        return await self.read_queries.get_user(q)

    @query(ListPosts, reads=[Posts])
    async def list_posts(self, q: ListPosts) -> QueryResult[Page[PostView]]:
        return await self.read_queries.list_posts(q)

    @query(ListFollowers, reads=[Follows])
    async def list_followers(self, q: ListFollowers) -> QueryResult[Page[FollowView]]:
        return await self.read_queries.list_followers(q)

    @query(ListFollowing, reads=[Follows])
    async def list_following(self, q: ListFollowing) -> QueryResult[Page[FollowView]]:
        return await self.read_queries.list_following(q)

    @query(Authenticate)
    async def authenticate(self, q: Authenticate) -> QueryResult[str]:
        return await self.read_queries.authenticate(q)
