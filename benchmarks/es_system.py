"""The same workload on the ``eventsourcing`` library (9.5), written the way its docs show.

Write side: an ``Application`` with ``User``, ``Post`` and ``Follow`` aggregates on the
library's SQLite or PostgreSQL persistence module. Read side: the library's projection
API: a ``Projection`` whose materialised view is a ``TrackingRecorder`` subclass that
updates ``bench_users`` and records the tracking position in one transaction, driven by
the library's ``ProjectionRunner`` (a subscription to the application's recorder).

The library's SQLite recorder has no subscriptions (``subscribe`` raises), so for SQLite
we add the smallest one its design allows: a recorder subclass that wakes in-process
subscribers after each committed insert, feeding the library's own
``ListenNotifySubscription``. PostgreSQL uses the library's LISTEN/NOTIFY subscription.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    ApplicationRecorder,
    ListenNotifySubscription,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteTrackingRecorder
from psycopg.sql import SQL

from .config import ES_PG_POOL
from .measure import MIN_LAG_SAMPLES, LagProbe, Target, run_clients
from .pg import split_url
from .workload import READ_MODEL_DDL, ClientScript, Op, Publish, Register, history
from .workload import follow_id as make_follow_id

APP_NAME = "SocialApp"

# -- domain ------------------------------------------------------------------------------------


class User(Aggregate):
    class Registered(Aggregate.Created):
        email: str

    @event(Registered)
    def __init__(self, id: uuid.UUID, email: str) -> None:
        self.email = email


class Post(Aggregate):
    class Published(Aggregate.Created):
        author_id: uuid.UUID
        content: str

    @event(Published)
    def __init__(self, id: uuid.UUID, author_id: uuid.UUID, content: str) -> None:
        self.author_id = author_id
        self.content = content


class FollowRelation(Aggregate):
    class Followed(Aggregate.Created):
        follower_id: uuid.UUID
        followee_id: uuid.UUID

    @event(Followed)
    def __init__(self, id: uuid.UUID, follower_id: uuid.UUID, followee_id: uuid.UUID) -> None:
        self.follower_id = follower_id
        self.followee_id = followee_id


def aggregate_for(op: Op) -> Aggregate:
    if isinstance(op, Register):
        return User(id=op.user_id, email=op.email)
    if isinstance(op, Publish):
        return Post(id=op.post_id, author_id=op.author_id, content=op.content)
    return FollowRelation(
        id=make_follow_id(op.follower_id, op.followee_id),
        follower_id=op.follower_id,
        followee_id=op.followee_id,
    )


class SocialApp(Application[uuid.UUID]):
    name = APP_NAME

    def register_user(self, user_id: uuid.UUID, email: str) -> None:
        self.save(User(id=user_id, email=email))

    def publish_post(self, post_id: uuid.UUID, author_id: uuid.UUID, content: str) -> None:
        self.repository.get(author_id)  # the author must exist
        self.save(Post(id=post_id, author_id=author_id, content=content))

    def follow(self, follower_id: uuid.UUID, followee_id: uuid.UUID) -> None:
        self.repository.get(followee_id)  # the followee must exist
        self.save(
            FollowRelation(
                id=make_follow_id(follower_id, followee_id),
                follower_id=follower_id,
                followee_id=followee_id,
            )
        )

    def execute(self, op: Op) -> None:
        if isinstance(op, Register):
            self.register_user(op.user_id, op.email)
        elif isinstance(op, Publish):
            self.publish_post(op.post_id, op.author_id, op.content)
        else:
            self.follow(op.follower_id, op.followee_id)


# -- SQLite subscriptions (absent from the library's SQLite module) ----------------------------

_listeners: dict[str, set[threading.Event]] = {}
_listeners_lock = threading.Lock()


class NotifyingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """Wakes in-process subscribers of the same database file after each commit."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super().insert_events(stored_events, **kwargs)
        with _listeners_lock:
            for listener in _listeners.get(self.datastore.pool.db_name, ()):
                listener.set()
        return ids

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return SQLiteSubscription(recorder=self, gt=gt, topics=topics)


class SQLiteSubscription(ListenNotifySubscription[NotifyingSQLiteApplicationRecorder]):
    def __init__(
        self,
        recorder: NotifyingSQLiteApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._db_name = recorder.datastore.pool.db_name
        with _listeners_lock:
            _listeners.setdefault(self._db_name, set()).add(self._has_been_notified)

    def stop(self) -> None:
        with _listeners_lock:
            _listeners.get(self._db_name, set()).discard(self._has_been_notified)
        super().stop()


# -- the read model: a materialised view updated with its tracking record ---------------------


class UsersViewInterface(TrackingRecorder):
    """The view's interface, as the library's projection pattern has it: one method per
    change, each recording its tracking position in the same transaction. Implemented
    below for SQLite and PostgreSQL."""

    @abstractmethod
    def registered(self, user_id: str, email: str, tracking: Tracking) -> None: ...

    @abstractmethod
    def posted(self, author_id: str, tracking: Tracking) -> None: ...

    @abstractmethod
    def followed(self, follower_id: str, followee_id: str, tracking: Tracking) -> None: ...


_REGISTER = "INSERT INTO bench_users (id, email) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
_POSTED = "UPDATE bench_users SET post_count = post_count + 1 WHERE id = ?"
_FOLLOWING = "UPDATE bench_users SET following_count = following_count + 1 WHERE id = ?"
_FOLLOWER = "UPDATE bench_users SET follower_count = follower_count + 1 WHERE id = ?"


class _StatementsView(UsersViewInterface):
    """Each change as its statements; a backend runs them with the tracking record."""

    @abstractmethod
    def _apply(self, statements: list[tuple[str, tuple[str, ...]]], tracking: Tracking) -> None:
        """The statements and the tracking record, in one transaction."""

    def registered(self, user_id: str, email: str, tracking: Tracking) -> None:
        self._apply([(_REGISTER, (user_id, email))], tracking)

    def posted(self, author_id: str, tracking: Tracking) -> None:
        self._apply([(_POSTED, (author_id,))], tracking)

    def followed(self, follower_id: str, followee_id: str, tracking: Tracking) -> None:
        self._apply([(_FOLLOWING, (follower_id,)), (_FOLLOWER, (followee_id,))], tracking)


class SQLiteUsersView(SQLiteTrackingRecorder, _StatementsView):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *READ_MODEL_DDL]

    def _apply(self, statements: list[tuple[str, tuple[str, ...]]], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            for sql, params in statements:
                c.execute(sql, params)
            self._insert_tracking(c, tracking)


class PostgresUsersView(PostgresTrackingRecorder, _StatementsView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.extend(SQL(ddl).format() for ddl in READ_MODEL_DDL)

    def _apply(self, statements: list[tuple[str, tuple[str, ...]]], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for sql, params in statements:
                curs.execute(sql.replace("?", "%s"), params, prepare=True)
            self._insert_tracking(curs, tracking)


class UsersProjection(Projection[UsersViewInterface]):
    name = "usersprojection"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register(User.Registered)
    def _registered(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.registered(str(domain_event.originator_id), domain_event.email, tracking)

    @process_event.register(Post.Published)
    def _published(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.posted(str(domain_event.author_id), tracking)

    @process_event.register(FollowRelation.Followed)
    def _followed(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.followed(str(domain_event.follower_id), str(domain_event.followee_id), tracking)


# -- the benchmark driver ----------------------------------------------------------------------


def environment(target: Target) -> dict[str, str]:
    view = UsersProjection.name.upper()
    if target.backend == "sqlite":
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": target.write,
            f"{view}_SQLITE_DBNAME": target.read,
            "SQLITE_LOCK_TIMEOUT": "30",
            "APPLICATION_RECORDER_TOPIC": (
                f"{__name__}:{NotifyingSQLiteApplicationRecorder.__qualname__}"
            ),
        }
    write, read = split_url(target.write), split_url(target.read)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": write.dbname,
        "POSTGRES_HOST": write.host,
        "POSTGRES_PORT": write.port,
        "POSTGRES_USER": write.user,
        "POSTGRES_PASSWORD": write.password,
        # One connection per client thread (the default pool holds one).
        "POSTGRES_POOL_SIZE": str(ES_PG_POOL),
        "POSTGRES_MAX_OVERFLOW": "8",
        f"{view}_POSTGRES_DBNAME": read.dbname,
        f"{view}_POSTGRES_POOL_SIZE": "2",
    }


class EventsourcingSystem:
    name = "eventsourcing"
    views: ClassVar[dict[str, type[UsersViewInterface]]] = {
        "sqlite": SQLiteUsersView,
        "postgresql": PostgresUsersView,
    }

    def __init__(self, target: Target) -> None:
        self.target = target
        self.env = environment(target)

    def close(self) -> None:
        pass

    def _runner(self) -> ProjectionRunner[SocialApp, UsersViewInterface]:
        return ProjectionRunner(
            application_class=SocialApp,
            projection_class=UsersProjection,
            view_class=self.views[self.target.backend],
            env=self.env,
        )

    def seed(self, n_events: int) -> None:
        with SocialApp(env=self.env) as app:
            chunk: list[Aggregate] = []
            for op in history(n_events):
                chunk.append(aggregate_for(op))
                if len(chunk) == 2000:
                    app.save(*chunk)
                    chunk = []
            if chunk:
                app.save(*chunk)

    def commands(self, clients: int, seconds: float) -> float:
        with SocialApp(env=self.env) as app:
            make: Callable[[int], Callable[[Op], None]] = lambda _client: app.execute  # noqa: E731
            return run_clients(clients, seconds, make)

    def replay(self, n_events: int, cap: float) -> float:
        """Events per second of the library's runner projecting from 0 to ``n_events``."""
        start = time.perf_counter()
        with self._runner() as runner:
            view = runner.view
            reached = 0
            while reached < n_events and time.perf_counter() - start < cap:
                time.sleep(0.005)
                reached = view.max_tracking_id(APP_NAME) or 0
            elapsed = time.perf_counter() - start
            runner.stop()
        return min(reached, n_events) / elapsed

    catchup = replay
    rebuild = replay

    def lag(self, samples: int, cap: float) -> list[float]:
        probe = LagProbe(self.target)
        try:
            with SocialApp(env=self.env) as app, self._runner():
                app.register_user(uuid.uuid4(), "warmup@bench.example")
                script = ClientScript(0)
                lags: list[float] = []
                began = time.perf_counter()
                for _ in range(samples):
                    if time.perf_counter() - began > cap and len(lags) >= MIN_LAG_SAMPLES:
                        break
                    op = script.next()
                    app.execute(op)
                    lags.append(probe.lag(op, time.perf_counter()))
                return lags
        finally:
            probe.close()
