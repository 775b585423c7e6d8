"""The relay's :class:`~cqrskit.relay.Publisher` on NATS JetStream, with nats-py.

**Async publishing, acknowledged per batch.** Each message of a batch is published at once
with a reply subject of our own inbox; the batch is done when the broker has answered for
every one of them (nats-py's ``publish_async`` does the same, but leaves a future unanswered
when the broker refuses a message, which is the answer the relay relies on).

**The guard.** Every message carries ``Nats-Expected-Last-Sequence``: the sequence the
message before it got (the batch's first one: the stream's end as read from the broker).
JetStream stores a message only if the stream still ends there, else answers "wrong last
sequence". A message lost in flight (a connection cut after some of a batch was sent) makes
every later one of the batch refused: the stream never holds a gap, and never holds the
same event twice, whatever the duplicate window (``Nats-Msg-Id`` is checked first: a
message the stream holds already, within the window, is answered "duplicate" with its
sequence, which is where the relay expected it: no harm either).

**No reconnection in the client.** The connection is made with nats-py's reconnection off:
a lost connection fails the batch in flight at once, and the relay itself reconnects with
backoff, then reads the stream's end again before publishing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo

from ..errors import ConfigurationError
from .errors import BrokerRefused, BrokerUnavailable, StreamMoved
from .message import RelayMessage, check_stream_name, check_subject_prefix, position_of
from .publisher import StreamEnd

__all__ = ["JetStreamPublisher"]

log = logging.getLogger("cqrskit.relay")

_WRONG_LAST_SEQUENCE = 10071
_STREAM_NAME_IN_USE = 10058
_SUBJECTS_OVERLAP = 10065
_SCHEMES = ("nats", "tls", "ws", "wss")
_BROKER_DOWN = (OSError, asyncio.TimeoutError, nats.errors.Error)
"""What nats-py raises when the server cannot be reached or does not answer (its JetStream
API errors derive from ``nats.errors.Error`` too: they are caught before these)."""


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    seq: int = 0
    error: _ApiError | None = None


_read_ack = msgspec.json.Decoder(_Ack).decode


class JetStreamPublisher:
    """Publishes to the JetStream stream ``stream`` (subjects ``<subject_prefix>.>``) of the
    NATS server at ``url``; creates the stream, on file storage, if it is missing.

    ``ack_timeout``: seconds a batch waits for its acknowledgements before the broker is
    taken as unavailable; ``timeout``: seconds for connecting and each JetStream API call.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        subject_prefix: str,
        *,
        ack_timeout: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self.url = check_nats_url(url)
        self.stream = check_stream_name(stream)
        self.subject_prefix = check_subject_prefix(subject_prefix)
        self.subjects = f"{subject_prefix}.>"
        self.where = _safe(url)
        self.ack_timeout = ack_timeout
        self.timeout = timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        self._pending: dict[str, asyncio.Future[int]] = {}
        self._serial = 0
        self._last_error: Exception | None = None

    # -- connection -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._nc is not None and self._nc.is_connected:
            return
        await self.close()
        self._last_error = None
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    [one.strip() for one in self.url.split(",")],
                    name=f"cqrskit-relay {self.stream}",
                    allow_reconnect=False,
                    max_reconnect_attempts=1,  # nats-py tries each server this many times more
                    reconnect_time_wait=0,
                    connect_timeout=max(1, round(self.timeout)),
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    closed_cb=self._on_disconnected,
                ),
                self.timeout * 3,
            )
        except _BROKER_DOWN as exc:
            raise BrokerUnavailable(
                f"NATS at {self.where} is unavailable: {self._why(exc)}"
            ) from None
        self._nc = nc
        try:
            self._inbox = nc.new_inbox()
            await nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
            self._js = nc.jetstream(timeout=self.timeout)
            await self._ensure_stream(self._js)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        self._fail_pending(BrokerUnavailable(f"the connection to NATS at {self.where} closed"))
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), self.timeout)

    def _connected(self) -> tuple[Client, JetStreamContext]:
        if self._nc is None or self._js is None or not self._nc.is_connected:
            raise BrokerUnavailable(f"not connected to NATS at {self.where}")
        return self._nc, self._js

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc  # the relay logs the failure it causes, once
        log.debug("nats: %s", exc)

    async def _on_disconnected(self) -> None:
        self._fail_pending(BrokerUnavailable(f"lost the connection to NATS at {self.where}"))

    def _why(self, exc: BaseException) -> str:
        cause = self._last_error if isinstance(exc, nats.errors.NoServersError) else exc
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, asyncio.TimeoutError | nats.errors.TimeoutError):
            return "timed out"
        return str(cause) or type(cause).__name__

    # -- the stream -------------------------------------------------------------------------

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                info = await self._create(js)
        except nats.js.errors.ServiceUnavailableError:
            raise BrokerUnavailable(
                f"NATS at {self.where} answers without JetStream: start it with -js"
            ) from None
        except nats.js.errors.APIError as exc:
            raise BrokerRefused(f"stream {self.stream}: {exc.description}") from None
        except _BROKER_DOWN as exc:
            raise BrokerUnavailable(f"NATS at {self.where}: {self._why(exc)}") from None
        subjects = info.config.subjects or []
        if self.subjects not in subjects and ">" not in subjects:
            raise BrokerRefused(
                f"stream {self.stream} exists with subjects {', '.join(subjects) or 'none'},"
                f" not {self.subjects}: give another --stream, or add {self.subjects} to it"
            )

    async def _create(self, js: JetStreamContext) -> StreamInfo:
        config = StreamConfig(
            name=self.stream,
            description="Events of a cqrskit app's log, in log order (cqrskit relay)",
            subjects=[self.subjects],
            storage=StorageType.FILE,
        )
        try:
            info = await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _SUBJECTS_OVERLAP:
                raise BrokerRefused(
                    f"subjects {self.subjects} belong to another stream than {self.stream}:"
                    " give that stream's name (--stream) or another subject prefix"
                ) from None
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            return await js.stream_info(self.stream)  # another relay created it meanwhile
        log.info("created JetStream stream %s (subjects %s)", self.stream, self.subjects)
        return info

    async def end(self) -> StreamEnd:
        _, js = self._connected()
        try:
            state = (await js.stream_info(self.stream)).state
            if state.messages == 0:
                if state.last_seq == 0:
                    return StreamEnd()
                raise BrokerRefused(
                    f"stream {self.stream} holds no message although it stored"
                    f" {state.last_seq} (purged, or removed by a limit): where the log"
                    " continues is unknown; delete the stream to publish the whole log again"
                )
            message = await js.get_msg(self.stream, seq=state.last_seq)
        except nats.js.errors.NotFoundError:
            raise BrokerRefused(
                f"stream {self.stream}: its last message was deleted, or the stream was:"
                " where the log continues is unknown"
            ) from None
        except nats.js.errors.APIError as exc:
            raise BrokerUnavailable(f"stream {self.stream}: {exc.description}") from None
        except _BROKER_DOWN as exc:
            raise BrokerUnavailable(f"NATS at {self.where}: {self._why(exc)}") from None
        try:
            position = position_of(message.data or b"")
        except msgspec.MsgspecError:
            raise BrokerRefused(
                f"the last message of stream {self.stream} (sequence {state.last_seq}) is not"
                f" one the relay published: publish nothing else on {self.subjects}"
            ) from None
        return StreamEnd(state.last_seq, position)

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, messages: Sequence[RelayMessage], after: StreamEnd) -> StreamEnd:
        nc, _ = self._connected()
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[int]] = []
        try:
            for i, message in enumerate(messages):
                self._serial += 1
                token = str(self._serial)
                future: asyncio.Future[int] = loop.create_future()
                self._pending[token] = future
                tokens.append(token)
                futures.append(future)
                headers = {
                    "Nats-Msg-Id": message.event_id,
                    # Stored only right after the message before it: no gap, no reordering.
                    "Nats-Expected-Last-Sequence": str(after.sequence + i),
                }
                await nc.publish(
                    message.subject, message.body, reply=f"{self._inbox}.{token}", headers=headers
                )
            if futures:
                _, late = await asyncio.wait(futures, timeout=self.ack_timeout)
                if late:
                    raise BrokerUnavailable(
                        f"NATS at {self.where} did not acknowledge {len(late)} of"
                        f" {len(futures)} messages within {self.ack_timeout:g}s"
                    )
            for i, future in enumerate(futures):
                stored_at = future.result()  # raises what the broker answered
                if stored_at != after.sequence + i + 1:
                    raise StreamMoved(f"stream {self.stream}: message stored at {stored_at}")
        except _BROKER_DOWN as exc:
            raise BrokerUnavailable(f"NATS at {self.where}: {self._why(exc)}") from None
        finally:
            for token, future in zip(tokens, futures, strict=True):
                self._pending.pop(token, None)
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: asyncio logs none of these at exit
        if not messages:
            return after
        return StreamEnd(after.sequence + len(messages), messages[-1].position)

    async def _on_ack(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._inbox) + 1 :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(
                BrokerUnavailable(f"no JetStream stream took {msg.subject}: was it deleted?")
            )
            return
        try:
            ack = _read_ack(msg.data)
        except msgspec.MsgspecError:
            future.set_exception(BrokerUnavailable(f"NATS answered {msg.data[:80]!r}"))
            return
        error = ack.error
        if error is None:
            future.set_result(ack.seq)
        elif error.err_code == _WRONG_LAST_SEQUENCE:
            future.set_exception(StreamMoved(f"stream {self.stream}: {error.description}"))
        elif error.code == 503:
            future.set_exception(BrokerUnavailable(f"stream {self.stream}: {error.description}"))
        else:
            future.set_exception(BrokerRefused(f"stream {self.stream}: {error.description}"))

    def _fail_pending(self, exc: Exception) -> None:
        # The batch in flight ends now rather than at its timeout (its futures stay with
        # publish, which retrieves their exceptions).
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)


def check_nats_url(url: str) -> str:
    """``url`` if it names a NATS server (``nats://HOST:PORT``, several comma-separated)."""
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigurationError(f"{_safe(one)}: give the NATS server as nats://HOST:PORT")
    return url


def _safe(url: str) -> str:
    """``url`` without credentials, for messages."""
    shown = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        host = parts.netloc.rpartition("@")[2]
        shown.append(parts._replace(netloc=host).geturl())
    return ",".join(shown)
