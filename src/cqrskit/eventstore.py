"""The event store contract every backend implements (and one abstract test suite checks).

Versions: a stream's version is the number of events in it; its first event has
``stream_version == 1``. Positions: every event has a global ``position`` (> 0) that
increases with the log order; the empty log has head position 0. ``read_all`` and
``read_stream`` start after their starting point, so a checkpoint is passed back as it is.

Why this module is long: it is the port itself, and the steps of personal data
(cqrskit.personal) that every backend shares: sealing an append with its subjects' keys,
opening what a read returns with the keys kept or looked up. Split, a backend would
inherit the port from one module and half its behaviour from another.
"""

from __future__ import annotations

import enum
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from . import _sealing
from .codec import Codec
from .keystore import SubjectForgotten, new_key
from .messages import Event, Metadata, RecordedEvent
from .personal import KeyConflict
from .sql import SqlTx

if TYPE_CHECKING:
    from .keystore import KeyStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "ExpectedVersion",
    "InlineHandler",
    "Snapshot",
    "StreamAppend",
    "StreamState",
    "Within",
]

_KeysOf = Callable[[Collection[str]], dict[str, bytes | None]]
"""A database's key lookup: the key rows of the subjects that have one."""

T = TypeVar("T")


class StreamState(enum.Enum):
    ANY = "any"
    """No check: append whatever the stream's version."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet (same as expecting version 0)."""


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM

ExpectedVersion = int | StreamState


@dataclass(frozen=True, slots=True)
class AppendResult:
    position: int
    """Global position of the last event appended: the command's consistency token."""
    version: int
    """The stream's version after the append."""


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """One stream's part of :meth:`EventStore.append_streams`."""

    stream_id: str
    events: Sequence[Event]
    expected_version: ExpectedVersion = ANY


Within = Callable[[SqlTx, list[AppendResult]], None]
"""Runs inside the transaction of :meth:`EventStore.append_streams`, after its inserts and
inline projections, with each append's result: if it raises, nothing is stored."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    state: bytes


InlineHandler = Callable[[SqlTx, Sequence[RecordedEvent], Sequence[Event]], None]
"""Runs inside the append's transaction, on the write database, with the events just
recorded (envelopes and decoded events, index-aligned). If it raises, the append fails
whole: nothing of it is stored, and neighbours in the same group commit are unaffected."""


def _then(first: Within | None, then: Within) -> Within:
    if first is None:
        return then

    def both(tx: SqlTx, results: list[AppendResult]) -> None:
        first(tx, results)
        then(tx, results)

    return both


def check_expected(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`ConcurrencyError` when ``actual`` does not satisfy ``expected``."""
    from .errors import ConcurrencyError

    if expected is ANY:
        return
    wanted = 0 if expected is NO_STREAM else expected
    if actual != wanted:
        raise ConcurrencyError(stream_id, expected, actual)


Encoded = list[tuple[str, int, bytes]]
"""Per event: type name, schema version, payload."""

EncodedAppends = list[tuple[StreamAppend, Encoded]]

_KEY_ATTEMPTS = 5
"""Seal-and-append attempts when another append made a subject's first key meanwhile."""


class EventStore(ABC):
    """Append-only log of events grouped in streams, with optimistic concurrency.

    Personal fields (:mod:`cqrskit.personal`) are sealed on the way in and opened on the
    way out with the keys of :attr:`keys`, kept in the same database as the events.
    """

    codec: Codec

    @property
    @abstractmethod
    def keys(self) -> KeyStore:
        """The key store of this log's data subjects (in the log's own database)."""

    @abstractmethod
    async def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        expected_version: ExpectedVersion = ANY,
        metadata: Metadata | None = None,
    ) -> AppendResult:
        """Append atomically; durable when this returns.

        Raises :class:`~cqrskit.errors.ConcurrencyError` (with the actual version) when
        the stream is not at ``expected_version``, and any error an inline handler raised
        (driver errors converted, e.g. :class:`~cqrskit.errors.UniqueViolation`).
        Appending no events is an error (:class:`ValueError`).
        """

    async def append_streams(
        self,
        appends: Sequence[StreamAppend],
        metadata: Metadata | None = None,
        *,
        within: Within | None = None,
    ) -> list[AppendResult]:
        """Append to several streams in ONE transaction: all are stored, or none.

        Each append is checked against its expected version (a stream may appear more
        than once: each then expects the version the previous one left), its events
        take consecutive positions in the order given, and the inline projections run
        for each. ``within`` then runs in the same transaction (to store an idempotency
        key with the command's answer, say). With no appends, ``within`` alone runs in a
        write transaction of the log's database. Raises as :meth:`append` does.

        The same on every backend: encoding and sealing here, the transaction in the
        backend's :meth:`_append_encoded`.
        """
        self._check_open()
        if not appends and within is None:
            return []
        return await self._append_sealed(appends, metadata, within)

    @abstractmethod
    def _check_open(self) -> None:
        """Raise :class:`~cqrskit.errors.StoreClosed` once closed."""

    @abstractmethod
    async def _append_encoded(
        self, parts: EncodedAppends, meta: bytes, within: Within | None
    ) -> list[AppendResult]:
        """The backend's transaction of :meth:`append_streams`, for encoded events."""

    def _encode_appends(
        self,
        appends: Sequence[StreamAppend],
        metadata: Metadata | None,
        keys: Mapping[str, bytes] | None = None,
    ) -> tuple[EncodedAppends, bytes]:
        """What every ``append_streams`` does before any I/O: each part's events encoded
        (one that does not encode fails the whole before anything is stored), and the
        metadata, once."""
        parts = [(a, self._encode(a.events, metadata, keys)[0]) for a in appends]
        return parts, self.codec.encode_metadata(metadata)

    def _encode(
        self,
        events: Sequence[Event],
        metadata: Metadata | None,
        keys: Mapping[str, bytes] | None = None,
    ) -> tuple[Encoded, bytes]:
        """What every append does before any I/O: refuse an empty append, and encode the
        events (type name, schema version, payload) and the metadata, so that one event
        that does not encode fails the append before anything is stored."""
        if not events:
            raise ValueError("append needs at least one event")
        encode = self.codec.encode
        if keys is None:
            return [encode(e) for e in events], self.codec.encode_metadata(metadata)
        return [encode(e, keys) for e in events], self.codec.encode_metadata(metadata)

    # -- personal data ------------------------------------------------------------------------

    async def _append_sealed(
        self, appends: Sequence[StreamAppend], metadata: Metadata | None, within: Within | None
    ) -> list[AppendResult]:
        """Encode (sealing personal fields with their subjects' keys, made here when new)
        and run the backend's transaction (:meth:`_append_encoded`), with the
        key rows to write (:meth:`_key_writes`) last in it, after ``within``.

        A subject's first key is made here and inserted by the append that first uses
        it: no transaction of its own. A subject whose key this store has not seen is
        taken for a new one at first (no lookup: a registration costs no extra query); if
        it had a key (or was forgotten), or another append made its first key meanwhile,
        the insert fails with :class:`KeyConflict`, nothing of the append is stored, and
        it is sealed again with the keys looked up."""
        for attempt in range(_KEY_ATTEMPTS):
            keyed = self.codec.keyed([e for a in appends for e in a.events])
            if keyed is None:
                parts, meta = self._encode_appends(appends, metadata)
                return await self._append_encoded(parts, meta, within)
            sealing, forgotten = keyed
            keys = await self._existing_keys(sealing, look_up=attempt > 0)
            created = {s: new_key() for s in sealing if s not in keys}
            keys.update(created)
            parts, meta = self._encode_appends(appends, metadata, keys)
            writes = self._key_writes(created, forgotten)
            kept = self._read_keys
            destroyed = kept.destroyed if kept else -1
            try:
                results = await self._append_encoded(parts, meta, _then(within, writes))
            except KeyConflict:
                if attempt == _KEY_ATTEMPTS - 1:
                    raise
                continue
            self._seal_keys.remember(created)
            if kept:  # a backend whose reads keep keys: kept for them too
                kept.made(created, destroyed)
            if forgotten:
                self._seal_keys.drop(forgotten)
                await self._scrub()
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    async def _prepare_sealed(
        self, events: Sequence[Event], metadata: Metadata | None
    ) -> tuple[Encoded, bytes] | None:
        """For ``append``: the events encoded, sealed with their subjects' keys, when it
        need not write any key row (every key exists, nobody is forgotten), so that it
        takes the backend's plain append path; None when it must go through
        :meth:`append_streams` (a first key to make, or a subject to forget)."""
        keyed = self.codec.keyed(events)
        if keyed is None:
            return self._encode(events, metadata)
        sealing, forgotten = keyed
        if forgotten:
            return None
        keys = await self._existing_keys(sealing, look_up=False)
        if len(keys) < len(sealing):
            return None
        return self._encode(events, metadata, keys)

    async def _existing_keys(self, subjects: Collection[str], *, look_up: bool) -> dict[str, bytes]:
        """The keys of ``subjects`` known to exist, to seal with: from a bounded per-store
        cache (filled by this store's reads and appends), and with ``look_up`` from the
        database for the others (raising :class:`SubjectForgotten` for a forgotten one).

        A key that another process destroys meanwhile may still seal a late append here
        from the cache, which nobody can open again (no read opens with a destroyed key)."""
        keys = self._seal_keys.known(subjects)
        missing = [s for s in subjects if s not in keys]
        if missing and look_up:
            found = await self._lookup_keys(missing)
            for subject, key in found.items():
                if key is None:
                    raise SubjectForgotten(subject)
                keys[subject] = key
            self._seal_keys.remember(keys)
        return keys

    _read_keys: _sealing.ReadKeys | None = None
    """Where a backend's reads keep keys, its appends' new keys too (set when it opens)."""

    def _kept(self, destroyed: int, lookup: _KeysOf) -> _KeysOf:
        """``lookup`` (the database's) through the kept keys, for a read that saw
        ``destroyed`` keys destroyed (``ReadKeys``), read before or with its rows."""
        kept = self._read_keys
        if kept is None or destroyed < 0:  # no count to trust: see the backends' destroyed()
            return lookup
        return lambda subjects: kept.lookup(subjects, destroyed, lookup)

    def _stream_opened(self, rows: Sequence[Sequence[Any]], lookup: _KeysOf) -> list[RecordedEvent]:
        """The records of a stream read's ``rows``: the nine columns of a
        :class:`RecordedEvent`, then the count of keys destroyed, read in the same
        snapshot. Their sealed fields are opened with the keys kept while that count stays,
        and with ``lookup`` (on the read's connection) for the others."""
        records = [RecordedEvent(*row[:9]) for row in rows]
        if not rows:
            return records
        destroyed = _sealing.destroyed_count(rows[0][9])
        return self._opened(records, self._kept(destroyed, lookup))

    @functools.cached_property
    def _seal_keys(self) -> _sealing.SealKeys:
        return _sealing.SealKeys()

    async def _scrub(self) -> None:
        """After an append that forgot someone: clear what the files still hold of the old
        rows, where the backend can (SQLite; docs/personal-data.md says why not PostgreSQL)."""
        return  # nothing to clear here: the backends that can, override it

    @abstractmethod
    async def _lookup_keys(self, subjects: Collection[str]) -> dict[str, bytes | None]:
        """The key rows of ``subjects`` that exist: a key, or None for a forgotten subject;
        a subject never keyed is absent."""

    @abstractmethod
    def _key_writes(self, created: dict[str, bytes], forgotten: Collection[str]) -> Within:
        """The statements that insert ``created`` keys (raising :class:`KeyConflict` for a
        subject keyed meanwhile) and destroy the keys of ``forgotten``, in an append's
        transaction."""

    def _opened(
        self, records: list[RecordedEvent], lookup: _sealing.KeyLookup
    ) -> list[RecordedEvent]:
        """``records`` with their sealed fields opened; ``lookup`` finds keys (on the
        read's own connection, as :meth:`_lookup_keys` answers). The keys found are kept
        to seal with (a command loads its aggregate, then appends to it)."""

        def looked_up(subjects: Collection[str]) -> Mapping[str, bytes | None]:
            found = lookup(subjects)
            self._seal_keys.remember(found)
            return found

        return _sealing.open_records(records, looked_up, self.codec.placeholders)

    @abstractmethod
    async def read_stream(self, stream_id: str, from_version: int = 0) -> list[RecordedEvent]:
        """Events of one stream with ``stream_version > from_version``, in version order,
        their personal fields opened as :meth:`read_all` does."""

    @abstractmethod
    async def read_all(
        self, from_position: int = 0, limit: int = 1000, *, sealed: bool = False
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events after ``from_position`` in log order.

        Sealed personal fields are opened (or read as placeholders once forgotten);
        ``sealed=True`` gives the payloads exactly as stored (to publish them onward)."""

    @abstractmethod
    async def head_position(self) -> int:
        """Position of the last event a reader can see (0 when empty)."""

    @abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """Current version of a stream (0 when it does not exist)."""

    @abstractmethod
    async def wait_for_new_events(self, after_position: int, timeout: float) -> bool:
        """Wait until an event after ``after_position`` may be readable, or ``timeout``.

        A hint for subscribers (woken in-process on commit, or by the backend's
        notification mechanism); ``read_all`` stays the truth. Returns True when woken.
        """

    @abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None: ...

    @abstractmethod
    async def load_snapshot(self, stream_id: str) -> Snapshot | None: ...

    @abstractmethod
    async def query(self, fn: Callable[[SqlTx], T]) -> T:
        """Run ``fn`` in a read transaction of the write database (e.g. a login lookup
        in a normalized write-model table kept by an inline handler)."""

    async def position_reached(self, checkpoint: int, target: int) -> bool:
        """Has a consumer whose checkpoint is ``checkpoint`` processed ``target``?

        Positions order the log on this backend, so a comparison answers it. Backends
        whose log order is not position order (PostgreSQL orders by commit) override it.
        """
        return checkpoint >= target

    async def lag_events(self, checkpoint: int, head: int) -> int:
        """How many events a consumer at ``checkpoint`` has still to process, up to ``head``.

        Positions here are dense (no gaps), so a subtraction answers it. Backends whose
        positions have gaps (PostgreSQL sequences) override it with a count.
        """
        return max(0, head - checkpoint)

    async def recorded_at(self, position: int) -> float | None:
        """``recorded_at`` of the first event after ``position`` (lag in seconds), if any."""
        events = await self.read_all(position, 1)
        return events[0].recorded_at if events else None

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
