"""Pure ASGI middleware: the body size limit, the request deadline and the catch-all for
real bugs, in ONE layer (:class:`Guard`). As three classes they cost three ASGI frames and
three wrapped ``send`` callables per request, a measurable share of the event loop's time
under load; the behaviour is that of the three stacked (catch-all outermost, then the
deadline, then the body limit)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyTooLarge

__all__ = ["RESPONSE_HEADERS", "Guard"]

RESPONSE_HEADERS = (
    # Browsers must not guess a type other than the one declared (a JSON body that looks
    # like HTML is not to run as a page).
    (b"x-content-type-options", b"nosniff"),
    # Tokens and personal data (emails, names) must stay out of every cache on the way;
    # nothing here is worth caching anyway: reads are read-your-writes.
    (b"cache-control", b"no-store"),
)
"""Added to every response."""

log = logging.getLogger("social.api")


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, object],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Every HTTP request goes through three guards, outermost first (and every response
    gets :data:`RESPONSE_HEADERS`):

    - the catch-all: a bug becomes a logged traceback and a JSON 500, never a dropped
      connection;
    - the deadline: no request outlives ``seconds``; past it, 503 with ``Retry-After``,
      never a hang (408 when it was the client's body that did not arrive: not the
      service's fault). When the database is down, a request may hang on a
      connection it already holds (a full pool fails fast on its own: about 1 s). The
      request is cancelled at the deadline: a write whose outcome is then unknown answers
      503 (not acknowledged: it may or may not have been stored, as with any timeout),
      and the client retries. The deadline is longer than the ``X-Min-Position`` wait,
      which answers its own 503;
    - the body limit: bodies over ``limit`` bytes are refused with 413, at once when
      Content-Length says so, else while the body streams in (a chunked body has none).
    """

    def __init__(self, app: ASGIApp, limit: int, seconds: float) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        receiving = False
        """The app is waiting for the client's body: a timeout now is the client's."""

        async def tracking_receive() -> Message:
            nonlocal receiving
            receiving = True
            message = await receive()  # a cancellation (the deadline) leaves the flag set
            receiving = False
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *RESPONSE_HEADERS]
            await send(message)

        try:
            try:
                async with asyncio.timeout(self.seconds):
                    await self._limited(scope, tracking_receive, tracking_send, lambda: started)
            except TimeoutError:
                slow_client = receiving
                log.warning(
                    "%s %s: no answer within %.1f s (%s)",
                    scope.get("method"),
                    scope.get("path"),
                    self.seconds,
                    "the client's body did not arrive" if slow_client else "database unavailable?",
                )
                if started:
                    raise
                if slow_client:
                    await _send_json(
                        tracking_send, 408, {"error": "The request body did not arrive in time"}
                    )
                else:
                    await _send_json(
                        tracking_send,
                        503,
                        {"error": "The service is unavailable, try again"},
                        [(b"retry-after", b"1")],
                    )
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(tracking_send, 500, {"error": "Internal server error"})

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]
    ) -> None:
        """The app, under the body limit."""
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"error": "Invalid Content-Length"})
                    return
                if declared > limit:
                    await _send_json(send, 413, {"error": str(BodyTooLarge(limit).detail)})
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge as exc:
            if started():
                raise
            await _send_json(send, 413, {"error": str(exc.detail)})
