"""Query handlers: plain reads of the read-model tables, each with the checkpoint of the
projection it reads, taken in the same read transaction (the ``X-Position`` it answers)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cqrskit import EventStore, QueryResult, ReadDatabase, Row, SqlTx, read_position

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
    decode_cursor,
    encode_cursor,
)
from ..application.throttle import LoginThrottle
from ..domain import InvalidCredentials, UserNotFound, verify_password
from ..domain.values import email_key, is_clean_text
from .write_model import find_login

__all__ = ["ReadQueries"]

log = logging.getLogger("social.auth")

T = TypeVar("T")

_NO_CURSOR = 2**63 - 1  # above every position: "from the newest"

_USER = (
    "SELECT id, email, display_name, avatar_url, created_at, post_count, follower_count,"
    " following_count, version FROM user_profiles WHERE id = ?"
)
# Keyset pagination on the event's global position, newest first: "position < cursor"
# continues exactly after the last item shown, so each item appears on one page only.
_POSTS = (
    "SELECT position, id, user_id, content, created_at FROM posts"
    " WHERE user_id = ? AND position < ? ORDER BY position DESC LIMIT ?"
)
_FOLLOWERS = (
    "SELECT f.position, u.id, u.display_name FROM follows f"
    " JOIN follow_users u ON u.id = f.follower_id"
    " WHERE f.followee_id = ? AND f.position < ? ORDER BY f.position DESC LIMIT ?"
)
_FOLLOWING = (
    "SELECT f.position, u.id, u.display_name FROM follows f"
    " JOIN follow_users u ON u.id = f.followee_id"
    " WHERE f.follower_id = ? AND f.position < ? ORDER BY f.position DESC LIMIT ?"
)


def _page(rows: Sequence[Row], limit: int, make: Callable[[Row], T]) -> Page[T]:
    """Rows were fetched with ``limit + 1``: the extra one only says a next page exists."""
    shown = rows[:limit]
    more = len(rows) > limit
    return Page([make(r) for r in shown], encode_cursor(int(shown[-1][0])) if more else None)


class ReadQueries:
    """The query handlers over the read database (and, for logins, the write model)."""

    def __init__(
        self,
        db: ReadDatabase,
        store: EventStore,
        dummy_hash: str,
        logins: LoginThrottle,
    ) -> None:
        self._db = db
        self._store = store
        self._dummy_hash = dummy_hash
        """Verified against when the email is unknown, so both failures take as long."""
        self._logins = logins
        self._tag_key = secrets.token_bytes(16)

    async def get_user(self, query: GetUser) -> QueryResult[UserView]:
        def run(tx: SqlTx) -> tuple[Row | None, int]:
            return tx.fetchone(_USER, (query.user_id,)), read_position(tx, UserProfiles.name)

        row, position = await self._db.read(run)
        if row is None:
            raise UserNotFound(query.user_id)
        view = UserView(
            id=row[0],
            display_name=row[2],
            avatar_url=row[3],
            created_at=row[4],
            post_count=int(row[5]),
            follower_count=int(row[6]),
            following_count=int(row[7]),
            version=int(row[8]),
            email=row[1] if query.viewer_id == query.user_id else None,
        )
        return QueryResult(view, position)

    async def list_posts(self, query: ListPosts) -> QueryResult[Page[PostView]]:
        rows, position = await self._list(
            Posts.name, "post_authors", _POSTS, query.user_id, query.limit, query.before
        )
        return QueryResult(
            _page(rows, query.limit, lambda r: PostView(r[1], r[2], r[3], r[4])), position
        )

    async def list_followers(self, query: ListFollowers) -> QueryResult[Page[FollowView]]:
        rows, position = await self._list(
            Follows.name, "follow_users", _FOLLOWERS, query.user_id, query.limit, query.before
        )
        return QueryResult(_page(rows, query.limit, lambda r: FollowView(r[1], r[2])), position)

    async def list_following(self, query: ListFollowing) -> QueryResult[Page[FollowView]]:
        rows, position = await self._list(
            Follows.name, "follow_users", _FOLLOWING, query.user_id, query.limit, query.before
        )
        return QueryResult(_page(rows, query.limit, lambda r: FollowView(r[1], r[2])), position)

    async def _list(
        self, projection: str, users: str, sql: str, user_id: str, limit: int, before: str | None
    ) -> tuple[list[Row], int]:
        cursor = _NO_CURSOR if before is None else decode_cursor(before)

        def run(tx: SqlTx) -> tuple[list[Row] | None, int]:
            # The user check, the page and the checkpoint come from one snapshot.
            known = tx.fetchone(f"SELECT 1 FROM {users} WHERE id = ?", (user_id,))
            rows = tx.fetchall(sql, (user_id, cursor, limit + 1)) if known else None
            return rows, read_position(tx, projection)

        rows, position = await self._db.read(run)
        if rows is None:
            raise UserNotFound(user_id)
        return rows, position

    async def authenticate(self, query: Authenticate) -> QueryResult[str]:
        """The user id for matching credentials; the position is the registration's.

        Throttled per account (:class:`~social.application.throttle.LoginThrottle`): a
        failure is logged with the account's pseudonym, never its address."""
        account = email_key(query.email) if is_clean_text(query.email) else query.email
        self._logins.check(account)
        try:
            result = await self._authenticate(query)
        except InvalidCredentials:
            count = self._logins.failed(account)
            log.warning("failed login %d in a row for account %s", count, self._pseudonym(account))
            raise
        self._logins.succeeded(account)
        return result

    async def _authenticate(self, query: Authenticate) -> QueryResult[str]:
        if not (is_clean_text(query.email) and is_clean_text(query.password)):
            raise InvalidCredentials()  # could not have been registered
        login: Any = await self._store.query(lambda tx: find_login(tx, query.email))
        encoded = self._dummy_hash if login is None else login[1]
        ok = await asyncio.to_thread(verify_password, query.password, encoded)
        if login is None or not ok:
            raise InvalidCredentials()
        return QueryResult(login[0], login[2])

    def _pseudonym(self, account: str) -> str:
        """The same account gives the same tag for this process's life; the tag does not
        give the address away (keyed with a secret of this process)."""
        digest = hmac.new(self._tag_key, account.encode("utf-8", "replace"), hashlib.sha256)
        return digest.hexdigest()[:12]
