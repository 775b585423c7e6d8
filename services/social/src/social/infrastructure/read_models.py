"""The read models' tables and the statements that change them (portable SQL: ``?``
placeholders, BIGINT/TEXT, ``ON CONFLICT``). The logic choosing which statement an event
runs is in ``social.application.projections``; the runner commits each batch of these
statements with the projection's checkpoint, so none of them needs to be idempotent.
"""

from __future__ import annotations

from cqrskit import SqlTx

__all__ = ["SqlFollowRows", "SqlPostRows", "SqlProfileRows"]


class SqlProfileRows:
    def create_schema(self, tx: SqlTx) -> None:
        # default_name (the email's local part) is kept so that clearing a display name
        # falls back to it in one UPDATE, without reading the row first.
        tx.execute(
            "CREATE TABLE IF NOT EXISTS user_profiles ("
            " id TEXT PRIMARY KEY,"
            " email TEXT NOT NULL,"
            " display_name TEXT NOT NULL,"
            " default_name TEXT NOT NULL,"
            " avatar_url TEXT,"
            " created_at TEXT NOT NULL,"
            " post_count BIGINT NOT NULL DEFAULT 0,"
            " follower_count BIGINT NOT NULL DEFAULT 0,"
            " following_count BIGINT NOT NULL DEFAULT 0,"
            " version BIGINT NOT NULL)"
        )
        # The follows counted above (a user forgotten is uncounted from the others'). A
        # table made before it needs one `social rebuild user_profiles` (CHANGELOG).
        tx.execute(
            "CREATE TABLE IF NOT EXISTS profile_follows ("
            " follower_id TEXT NOT NULL,"
            " followee_id TEXT NOT NULL,"
            " PRIMARY KEY (follower_id, followee_id))"
        )
        tx.execute(
            "CREATE INDEX IF NOT EXISTS profile_follows_by_followee"
            " ON profile_follows (followee_id)"
        )

    def insert(
        self,
        tx: SqlTx,
        *,
        id: str,
        email: str,
        display_name: str | None,
        default_name: str,
        avatar_url: str | None,
        created_at: str,
        version: int,
    ) -> None:
        tx.execute(
            "INSERT INTO user_profiles (id, email, display_name, default_name, avatar_url,"
            " created_at, version) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                id,
                email,
                display_name or default_name,
                default_name,
                avatar_url,
                created_at,
                version,
            ),
        )

    def update(
        self, tx: SqlTx, id: str, display_name: str | None, avatar_url: str | None, version: int
    ) -> None:
        tx.execute(
            "UPDATE user_profiles SET display_name = COALESCE(?, default_name), avatar_url = ?,"
            " version = ? WHERE id = ?",
            (display_name, avatar_url, version, id),
        )

    def add_posts(self, tx: SqlTx, id: str, posts: int) -> None:
        tx.execute("UPDATE user_profiles SET post_count = post_count + ? WHERE id = ?", (posts, id))

    def follow(self, tx: SqlTx, follower_id: str, followee_id: str) -> None:
        # Each count only while the other user is here: a follow appended just after a
        # forget of either (the check and the append are not one transaction) counts
        # nothing, so the forget's uncounting stays exact.
        pair = (follower_id, followee_id)
        tx.execute(
            "INSERT INTO profile_follows (follower_id, followee_id) SELECT ?, ?"
            " WHERE (SELECT count(*) FROM user_profiles WHERE id IN (?, ?)) = 2"
            " ON CONFLICT DO NOTHING",
            (*pair, *pair),
        )
        tx.execute(_COUNT_FOLLOWING, (1, follower_id, followee_id))
        tx.execute(_COUNT_FOLLOWERS, (1, followee_id, follower_id))

    def unfollow(self, tx: SqlTx, follower_id: str, followee_id: str) -> None:
        tx.execute(_COUNT_FOLLOWING, (-1, follower_id, followee_id))
        tx.execute(_COUNT_FOLLOWERS, (-1, followee_id, follower_id))
        tx.execute(
            "DELETE FROM profile_follows WHERE follower_id = ? AND followee_id = ?",
            (follower_id, followee_id),
        )

    def forget(self, tx: SqlTx, id: str) -> None:
        tx.execute(
            "UPDATE user_profiles SET follower_count = follower_count - 1"
            " WHERE id IN (SELECT followee_id FROM profile_follows WHERE follower_id = ?)",
            (id,),
        )
        tx.execute(
            "UPDATE user_profiles SET following_count = following_count - 1"
            " WHERE id IN (SELECT follower_id FROM profile_follows WHERE followee_id = ?)",
            (id,),
        )
        tx.execute("DELETE FROM profile_follows WHERE follower_id = ?", (id,))
        tx.execute("DELETE FROM profile_follows WHERE followee_id = ?", (id,))
        tx.execute("DELETE FROM user_profiles WHERE id = ?", (id,))


_COUNT_FOLLOWING = (
    "UPDATE user_profiles SET following_count = following_count + ?"
    " WHERE id = ? AND EXISTS (SELECT 1 FROM user_profiles WHERE id = ?)"
)
_COUNT_FOLLOWERS = (
    "UPDATE user_profiles SET follower_count = follower_count + ?"
    " WHERE id = ? AND EXISTS (SELECT 1 FROM user_profiles WHERE id = ?)"
)


class SqlPostRows:
    def create_schema(self, tx: SqlTx) -> None:
        # position (the PostCreated event's global position) is the pagination key: unique,
        # and a post committed later always gets a higher one, so "position < cursor"
        # pages never see an insert move items between pages.
        tx.execute(
            "CREATE TABLE IF NOT EXISTS posts ("
            " position BIGINT PRIMARY KEY,"
            " id TEXT NOT NULL UNIQUE,"
            " user_id TEXT NOT NULL,"
            " content TEXT NOT NULL,"
            " created_at TEXT NOT NULL)"
        )
        tx.execute("CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id, position)")
        tx.execute("CREATE TABLE IF NOT EXISTS post_authors (id TEXT PRIMARY KEY)")

    def add_author(self, tx: SqlTx, id: str) -> None:
        tx.execute("INSERT INTO post_authors (id) VALUES (?)", (id,))

    def add_post(
        self, tx: SqlTx, *, position: int, id: str, user_id: str, content: str, created_at: str
    ) -> None:
        tx.execute(
            "INSERT INTO posts (position, id, user_id, content, created_at) VALUES (?, ?, ?, ?, ?)",
            (position, id, user_id, content, created_at),
        )

    def forget(self, tx: SqlTx, id: str) -> None:
        tx.execute("DELETE FROM posts WHERE user_id = ?", (id,))
        tx.execute("DELETE FROM post_authors WHERE id = ?", (id,))


class SqlFollowRows:
    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS follow_users ("
            " id TEXT PRIMARY KEY,"
            " display_name TEXT NOT NULL,"
            " default_name TEXT NOT NULL)"
        )
        # position: the UserFollowed event's global position, the pagination key of both
        # lists (newest follow first), unique per row.
        tx.execute(
            "CREATE TABLE IF NOT EXISTS follows ("
            " follower_id TEXT NOT NULL,"
            " followee_id TEXT NOT NULL,"
            " position BIGINT NOT NULL,"
            " PRIMARY KEY (follower_id, followee_id))"
        )
        tx.execute(
            "CREATE INDEX IF NOT EXISTS follows_by_followee ON follows (followee_id, position)"
        )
        tx.execute(
            "CREATE INDEX IF NOT EXISTS follows_by_follower ON follows (follower_id, position)"
        )

    def add_user(self, tx: SqlTx, id: str, display_name: str | None, default_name: str) -> None:
        tx.execute(
            "INSERT INTO follow_users (id, display_name, default_name) VALUES (?, ?, ?)",
            (id, display_name or default_name, default_name),
        )

    def rename_user(self, tx: SqlTx, id: str, display_name: str | None) -> None:
        tx.execute(
            "UPDATE follow_users SET display_name = COALESCE(?, default_name) WHERE id = ?",
            (display_name, id),
        )

    def add_follow(self, tx: SqlTx, follower_id: str, followee_id: str, position: int) -> None:
        tx.execute(
            "INSERT INTO follows (follower_id, followee_id, position) VALUES (?, ?, ?)"
            " ON CONFLICT (follower_id, followee_id) DO UPDATE SET position = excluded.position",
            (follower_id, followee_id, position),
        )

    def remove_follow(self, tx: SqlTx, follower_id: str, followee_id: str) -> None:
        tx.execute(
            "DELETE FROM follows WHERE follower_id = ? AND followee_id = ?",
            (follower_id, followee_id),
        )

    def forget(self, tx: SqlTx, id: str) -> None:
        tx.execute("DELETE FROM follows WHERE follower_id = ?", (id,))
        tx.execute("DELETE FROM follows WHERE followee_id = ?", (id,))
        tx.execute("DELETE FROM follow_users WHERE id = ?", (id,))
