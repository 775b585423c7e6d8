"""The workload every system runs: the seed's social domain, reduced to what moves counters.

Users register, publish posts and follow each other; the read model keeps per user
``post_count``, ``follower_count`` and ``following_count``. Streams: ``user-<id>`` (one
event: registered), ``post-<id>`` (published), ``follow-<follower>-<followee>`` (followed),
so concurrent clients never contend on a stream and no stream grows during a run.

A timed client repeats the cycle ``register, post, post, follow`` (follow: the user just
registered follows the client's previous one): every command loads at most one short
stream and appends one event, on every system.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

CONTENT = "benchmark post " + "x" * 84
"""A 100-character post body."""

READ_MODEL_DDL = (
    """CREATE TABLE IF NOT EXISTS bench_users (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        post_count INTEGER NOT NULL DEFAULT 0,
        follower_count INTEGER NOT NULL DEFAULT 0,
        following_count INTEGER NOT NULL DEFAULT 0
    )""",
)
"""The read model table (portable SQL); cqrskit and raw use it as is, eventsourcing's view
creates the same columns."""


@dataclass(frozen=True, slots=True)
class Register:
    user_id: uuid.UUID
    email: str


@dataclass(frozen=True, slots=True)
class Publish:
    post_id: uuid.UUID
    author_id: uuid.UUID
    content: str


@dataclass(frozen=True, slots=True)
class Follow:
    follower_id: uuid.UUID
    followee_id: uuid.UUID


Op = Register | Publish | Follow


def follow_id(follower: uuid.UUID, followee: uuid.UUID) -> uuid.UUID:
    """Deterministic id of a follow relationship (its stream, its aggregate)."""
    return uuid.uuid5(follower, followee.hex)


def history(n_events: int, seed: int = 7) -> Iterator[Op]:
    """A deterministic log of ``n_events`` operations (one event each) for seeding stores
    before a catch-up or rebuild: a quarter registrations, half posts, a quarter follows."""
    rng = random.Random(seed)
    users: list[uuid.UUID] = []
    for i in range(n_events):
        slot = i % 4
        if slot == 0 or not users:
            user = uuid.UUID(int=rng.getrandbits(128), version=4)
            users.append(user)
            yield Register(user, f"u{len(users)}@bench.example")
        elif slot == 3 and len(users) > 1:
            # The newest user follows an earlier one: each pair occurs once.
            yield Follow(users[-1], users[rng.randrange(len(users) - 1)])
        else:
            author = users[rng.randrange(len(users))]
            yield Publish(uuid.UUID(int=rng.getrandbits(128), version=4), author, CONTENT)


class ClientScript:
    """The endless command cycle of one timed client (register, post, post, follow)."""

    def __init__(self, client: int) -> None:
        self._client = client
        self._n = 0
        self._current: uuid.UUID | None = None
        self._previous: uuid.UUID | None = None

    def next(self) -> Op:
        step = self._n % 4
        self._n += 1
        if step == 0 or self._current is None:
            self._previous, self._current = self._current, uuid.uuid4()
            return Register(self._current, f"c{self._client}-{self._n}@bench.example")
        if step == 3 and self._previous is not None:
            return Follow(self._current, self._previous)
        return Publish(uuid.uuid4(), self._current, CONTENT)
