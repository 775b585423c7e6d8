"""The relay: follows an app's event log and publishes each event, in log order, through a
:class:`~cqrskit.relay.Publisher`.

**Where it resumes.** Not from a checkpoint of its own: from the broker stream itself. On
start, after any failure and whenever it takes the lease, the relay reads the stream's last
message, takes the log position it carries, and publishes from the next event on. The
stream is its checkpoint, moved by nothing but the broker's acknowledgements, so no crash
between a publish and a checkpoint write can repeat or skip an event, however long ago the
broker's duplicate window closed.

**Why nothing is published twice or out of order.** The log is read in position order and
gap-free (every backend's ``read_all``); a batch's messages are published in that order,
each stored only where the one before it ended (see :mod:`cqrskit.relay.publisher`). A
relay that lost a race (another one published first) is told so by the broker
(:class:`~cqrskit.relay.StreamMoved`) and reads the stream's end again.

**One active relay per stream.** It publishes only while it holds the app's lease
``relay:<stream>`` (:class:`~cqrskit.Lease`: a session advisory lock on PostgreSQL, a lock
file on SQLite); the others stand by and take over when the holder dies. Two holders at
once (a lease lost while a batch was in flight) would still not repeat an event: the
broker's guard above holds whoever publishes.

**Failures.** The broker or the database away: one log line (again only when the reason
changes), a retry after a backoff (:func:`~cqrskit.backoff_delays`), never a traceback.

**Its report.** Given the app's read database (:meth:`Relay.for_app` does), it reports its
state and position there (:mod:`cqrskit.relay.report`), for every process of the app to
see. A report, never its checkpoint: it does not resume from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ..backoff import backoff_delays
from ..errors import PersistenceError
from ..eventstore import EventStore
from ..lease import Lease
from ..messages import RecordedEvent
from ..readside import ReadDatabase
from .errors import BrokerRefused, BrokerUnavailable, StreamMoved
from .message import to_message
from .publisher import Publisher, StreamEnd
from .report import Reporter
from .status import RelayStatus, measure

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Relay"]

log = logging.getLogger("cqrskit.relay")

OnAcked = Callable[[Sequence[RecordedEvent]], None]
OnState = Callable[[str, str], None]

_REPORTED = {"relaying": "running", "waiting": "waiting", "standby": "standby"}
"""Its states as reported (``stopped`` is reported once, when it stops)."""


class Relay:
    """Publishes the log of ``store`` through ``publisher``, from where the broker stream
    ends (see the module docstring). ``lease`` (the app's): publish only while holding
    ``relay:<stream>``; ``on_state(state, line)`` is told each change of state with a line
    for an operator; ``on_acked(events)`` each batch the broker acknowledged (metrics);
    ``report_to``: the read database where it reports its progress (see the module
    docstring)."""

    def __init__(
        self,
        store: EventStore,
        publisher: Publisher,
        subject_prefix: str,
        *,
        lease: Lease | None = None,
        batch_size: int = 500,
        lease_interval: float = 1.0,
        max_delay: float = 5.0,
        on_state: OnState | None = None,
        on_acked: OnAcked | None = None,
        report_to: ReadDatabase | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.publisher = publisher
        self.subject_prefix = subject_prefix
        self.lease = lease
        self.lease_name = f"relay:{publisher.stream}"
        self.batch_size = batch_size
        self.lease_interval = lease_interval
        self.max_delay = max_delay
        self.on_state = on_state
        self.on_acked = on_acked
        self.reporter = None if report_to is None else Reporter(report_to, publisher.stream)
        self.state = "starting"
        """``starting``, ``relaying``, ``standby`` (another process holds the lease),
        ``waiting`` (the broker or the database is away: retrying) or ``stopped``."""
        self.published = 0
        """Events this relay published (acknowledged) since it started."""
        self._end: StreamEnd | None = None
        self._leased = False
        self._renewed = 0.0
        self._failure: str | None = None

    @classmethod
    def for_app(
        cls,
        app: App,
        publisher: Publisher,
        subject_prefix: str,
        *,
        batch_size: int = 500,
        on_state: OnState | None = None,
        on_acked: OnAcked | None = None,
    ) -> Relay:
        """The relay of an open app: its store, its backend's lease (the one its
        projections use) renewed every ``app.lease_interval`` seconds; it reports to the
        app's read database."""
        return cls(
            app.store,
            publisher,
            subject_prefix,
            lease=app.lease,
            batch_size=batch_size,
            lease_interval=app.lease_interval,
            on_state=on_state,
            on_acked=on_acked,
            report_to=app.db,
        )

    @property
    def position(self) -> int | None:
        """The log position the broker stream ends at, as this relay last saw it."""
        return None if self._end is None else self._end.position

    async def status(self) -> RelayStatus:
        """Position, head and lag as this relay sees them now."""
        return await measure(self.store, self.publisher.stream, self.position, self.state)

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (or the task is cancelled); then let go of the lease
        and the broker."""
        stop = stop or asyncio.Event()
        delays = None
        try:
            while not stop.is_set():
                await self._report()
                try:
                    if not await self._hold_lease():
                        await _wait(stop, self.lease_interval)
                        continue
                    await self._step(stop)
                    delays = None
                    self._failure = None
                except StreamMoved:
                    self._end = None  # another relay published: read where the stream ends
                except (BrokerUnavailable, BrokerRefused, PersistenceError) as exc:
                    self._end = None
                    await self.publisher.close()
                    delays = delays or backoff_delays(0.1, self.max_delay)
                    await self._failed(str(exc), next(delays), stop)
        finally:
            position, self._end = self.position, None
            with contextlib.suppress(Exception):
                await self.publisher.close()
            await self._release()
            self._set("stopped", "relay stopped")
            if self.reporter is not None:
                await self.reporter.report("stopped", position, now=True)

    async def _step(self, stop: asyncio.Event) -> None:
        if self._end is None:
            await self.publisher.open()
            self._end = await self.publisher.end()
            self._set(
                "relaying",
                f"relaying to stream {self.publisher.stream} at {self.publisher.where}"
                f" (subjects {self.subject_prefix}.<EventType>)"
                f" after position {self._end.position}",
            )
        # As stored: personal fields stay sealed on the wire (cqrskit.personal).
        events = await self.store.read_all(self._end.position, self.batch_size, sealed=True)
        if not events:
            await _wait(
                stop,
                self.lease_interval,
                self.store.wait_for_new_events(self._end.position, self.lease_interval),
            )
            return
        prefix, codec = self.subject_prefix, self.store.codec
        messages = [to_message(event, codec, prefix) for event in events]
        self._end = await self.publisher.publish(messages, self._end)
        self.published += len(events)
        if self.on_acked is not None:
            self.on_acked(events)

    async def _failed(self, why: str, delay: float, stop: asyncio.Event) -> None:
        if why != self._failure:  # one line per cause, not one per retry
            log.warning(
                "relay %s: %s; retrying (backoff up to %gs)",
                self.publisher.stream,
                why,
                self.max_delay,
            )
            self._failure = why
        self._set("waiting", f"waiting: {why}")
        await self._report()
        await _wait(stop, delay)

    # -- the lease --------------------------------------------------------------------------

    async def _hold_lease(self) -> bool:
        if self.lease is None:
            return True
        now = time.monotonic()
        if self._leased:
            if now - self._renewed < self.lease_interval:
                return True
            if await self.lease.renew(self.lease_name):
                self._renewed = now
                return True
            log.warning(
                "relay %s: lease %s lost, standing by", self.publisher.stream, self.lease_name
            )
            self._leased = False
        elif await self.lease.acquire(self.lease_name):
            self._leased = True
            self._renewed = now
            self._end = None  # the previous holder moved the stream: read where it ends
            return True
        self._end = None
        self._set("standby", f"standing by: another process holds {self.lease_name}")
        return False

    async def _release(self) -> None:
        if self.lease is not None and self._leased:
            self._leased = False
            try:
                await self.lease.release(self.lease_name)
            except Exception as exc:  # closing: its holder's end frees it anyway
                log.warning(
                    "relay %s: could not release %s: %s",
                    self.publisher.stream,
                    self.lease_name,
                    exc,
                )

    async def _report(self) -> None:
        """Report the state and position, when due (:class:`~cqrskit.relay.report.Reporter`
        decides): at the top of each turn of the loop, so after each batch, and about every
        second while idle or standing by."""
        state = _REPORTED.get(self.state)
        if self.reporter is not None and state is not None:
            await self.reporter.report(state, self.position)

    def _set(self, state: str, line: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state is not None:
            self.on_state(state, line)


async def _wait(
    stop: asyncio.Event, timeout: float, also: Coroutine[Any, Any, object] | None = None
) -> None:
    """Until ``stop`` is set, ``timeout`` passes, or ``also`` is done."""
    waits: set[asyncio.Future[object]] = {asyncio.ensure_future(stop.wait())}
    if also is not None:
        waits.add(asyncio.ensure_future(also))
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a failing wait (the store closed) raises here
    finally:
        for task in waits:
            task.cancel()
