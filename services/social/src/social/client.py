"""An HTTP client of the social service that reads its own writes.

It keeps the highest ``X-Position`` it has seen (session consistency, as a browser tab
would) and sends it as ``X-Min-Position`` on every read, so a read never shows a state
older than this client's own last write. When the read side is not there within the
server's wait (503 with ``Retry-After``), the read is retried with exponential backoff
and full jitter (:func:`cqrskit.consistency.retry_read`), never sooner than the server
asked.

Every write carries an ``Idempotency-Key``, one per logical write (or the caller's own,
``key=``): when its answer is lost (a timeout, a dropped connection, a 503), the write is
sent again with the same key, with backoff, and the server answers from the first
execution if there was one (``Idempotent-Replayed: true``) instead of applying it twice.

::

    async with SocialClient("http://127.0.0.1:8000") as client:
        user = await client.post("/users", {"email": "ada@example.com", "password": "..."})
        profile = await client.get(f"/users/{user.json()['id']}")   # sees the write
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from cqrskit import backoff_delays, retry_read

__all__ = ["ReadNotCaughtUp", "SocialClient"]

_RETRIED_WRITE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Where a write's answer may be lost after the server applied it: sent again, same key."""


class ReadNotCaughtUp(Exception):
    """The server answered 503: its read side had not reached our position in time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        retry_after = response.headers.get("retry-after", "0")
        self.retry_after = float(retry_after) if retry_after.isdigit() else 0.0
        super().__init__(f"{response.request.url}: read side not caught up")


class SocialClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        attempts: int = 5,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self.token = token
        self.position = 0
        """Highest X-Position seen: this session's consistency token."""
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay

    async def __aenter__(self) -> SocialClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(self, email: str, password: str) -> str:
        response = await self.post("/sessions", {"email": email, "password": password})
        response.raise_for_status()
        self.token = str(response.json()["token"])
        return self.token

    # -- writes: one key each, retried with it, then remember where they got -------------------

    async def post(self, path: str, body: Any = None, *, key: str | None = None) -> httpx.Response:
        return await self._write("POST", path, body, key)

    async def patch(self, path: str, body: Any = None, *, key: str | None = None) -> httpx.Response:
        return await self._write("PATCH", path, body, key)

    async def put(self, path: str, body: Any = None, *, key: str | None = None) -> httpx.Response:
        return await self._write("PUT", path, body, key)

    async def delete(
        self, path: str, body: Any = None, *, key: str | None = None
    ) -> httpx.Response:
        """``body``: ``DELETE /users/me`` takes the password in one."""
        return await self._write("DELETE", path, body, key)

    async def _write(self, method: str, path: str, body: Any, key: str | None) -> httpx.Response:
        headers = {**self._headers(), "Idempotency-Key": key or uuid.uuid4().hex}
        delays = backoff_delays(self._base_delay, self._max_delay, attempts=self._attempts)
        while True:
            try:
                response = await self._http.request(method, path, json=body, headers=headers)
            except _RETRIED_WRITE_ERRORS:
                delay = next(delays, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            if response.status_code == 503 and (delay := next(delays, None)) is not None:
                retry_after = response.headers.get("retry-after", "0")
                await asyncio.sleep(max(delay, float(retry_after) if retry_after.isdigit() else 0))
                continue
            self._saw(response)
            return response

    # -- reads: at least at our position, retried with backoff ---------------------------------

    async def get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        async def attempt() -> httpx.Response:
            headers = self._headers()
            headers["X-Min-Position"] = str(self.position)
            response = await self._http.get(path, params=params, headers=headers)
            if response.status_code == 503:
                error = ReadNotCaughtUp(response)
                await asyncio.sleep(error.retry_after)  # never sooner than the server asked
                raise error
            return response

        try:
            response = await retry_read(
                attempt,
                retry_on=(ReadNotCaughtUp,),
                attempts=self._attempts,
                base_delay=self._base_delay,
                max_delay=self._max_delay,
            )
        except ReadNotCaughtUp as exc:
            return exc.response
        self._saw(response)
        return response

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _saw(self, response: httpx.Response) -> None:
        raw = response.headers.get("x-position", "")
        if raw.isdigit():
            self.position = max(self.position, int(raw))
