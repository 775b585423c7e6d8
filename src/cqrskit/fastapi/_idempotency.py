"""The ``Idempotency-Key`` header, for any app: the key, with the fingerprint of the
request (method, path, body), as a route parameter; the route scopes it to its caller and
passes it to ``app.dispatch(..., idempotency=)`` (see :mod:`cqrskit.idempotency`). A
repeat is answered by :func:`~cqrskit.fastapi.respond` from the stored answer, with
``Idempotent-Replayed: true``.

::

    @api.post("/accounts", status_code=201)
    async def open_account(body: Opening, key: IdempotencyKeyHeader) -> Response:
        result = await bank.dispatch(OpenAccount(body.owner), idempotency=key)
        return respond(result, {"id": result.value}, status_code=201)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..errors import InvalidIdempotencyKey
from ..idempotency import IdempotencyKey
from ._errors import BadRequest

__all__ = ["IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "IdempotencyKeyHeader", "idempotency_key"]

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


async def idempotency_key(request: Request) -> IdempotencyKey | None:
    """The request's ``Idempotency-Key`` (None without one), anonymous (scope "": a route
    with an authenticated caller scopes it, ``key.for_caller(user_id)``); 400 when it is
    not 1 to 255 printable ASCII characters."""
    raw = request.headers.get(IDEMPOTENCY_HEADER)
    if raw is None:
        return None
    body = await request.body()  # cached by the request: the route's body reads it again
    fingerprint = IdempotencyKey.fingerprint_of(request.method, request.url.path, body)
    try:
        return IdempotencyKey(raw, fingerprint)
    except InvalidIdempotencyKey as exc:
        raise BadRequest(f"{IDEMPOTENCY_HEADER}: {exc}") from None


IdempotencyKeyHeader = Annotated[IdempotencyKey | None, Depends(idempotency_key)]
"""A route parameter: the request's idempotency key, or None."""
