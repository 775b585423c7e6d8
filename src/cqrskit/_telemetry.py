"""OpenTelemetry spans when ``opentelemetry-api`` is installed (the ``otel`` extra), and a
shared no-op when it is not::

    with span("cqrskit.append", stream_id=stream, events=len(events)):
        result = await store.append(...)

Attribute names get the ``cqrskit.`` prefix (``cqrskit.stream_id``); None values are left
out. Whether the API imports is checked once, when this module is imported. Without it,
:func:`span` returns :data:`NOOP` and costs a function call; with it but no SDK set up
(the global tracer provider is still the API's placeholder), the same, plus a look at the
global provider: spans that nobody would record are never made. Set up the SDK (a
``TracerProvider`` with an exporter, ``trace.set_tracer_provider``) and every span is
recorded, a child of the request's span (see :func:`request_span`).

Tests record spans without touching the global provider: set :data:`provider`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["ENABLED", "NOOP", "SpanLike", "finish_request", "provider", "request_span", "span"]


class SpanLike(Protocol):
    """What a ``with span(...) as s`` gives: an OpenTelemetry span, or :data:`NOOP`."""

    def set_attribute(self, key: str, value: Any) -> None: ...


class _Noop:
    """The span of a trace that nobody records: one shared instance, no state."""

    __slots__ = ()

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None


NOOP = _Noop()

provider: Any = None
"""A ``TracerProvider`` to use instead of the global one (tests); None: the global one."""

try:
    from opentelemetry import propagate, trace
except ImportError:  # the otel extra is not installed: every span is NOOP
    ENABLED = False
else:
    ENABLED = True

_UNSET = object()
_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""A provider named by the environment is loaded by ``get_tracer_provider``: ask it."""
_PLACEHOLDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider) if ENABLED else ()

_cached: tuple[Any, Any] = (None, None)
"""(provider, its tracer for cqrskit): asking a provider for a tracer makes a new one."""


def _global_provider() -> Any:
    """The global tracer provider; None while nobody has set one. Read from the API's own
    variable when it has one: ``get_tracer_provider()`` looks up ``os.environ`` on each
    call until a provider is set (0.7 us, more than the rest of a span that is not made)."""
    current = getattr(trace, "_TRACER_PROVIDER", _UNSET)
    if current is _UNSET or (current is None and _FROM_ENVIRONMENT):
        current = trace.get_tracer_provider()
    return current


def _tracer() -> Any:
    """The tracer to record with, or None when spans would be thrown away."""
    global _cached
    current = provider
    if current is None:
        current = _global_provider()
        if current is None or isinstance(current, _PLACEHOLDERS):
            return None  # no SDK set up: nothing would record the span
    cached_provider, tracer = _cached
    if cached_provider is not current:
        tracer = current.get_tracer("cqrskit")
        _cached = (current, tracer)
    return tracer


def _span(name: str, **attributes: Any) -> AbstractContextManager[SpanLike]:
    tracer = _tracer()
    if tracer is None:
        return NOOP
    named = {f"cqrskit.{k}": v for k, v in attributes.items() if v is not None}
    context_manager: AbstractContextManager[SpanLike] = tracer.start_as_current_span(
        name, attributes=named
    )
    return context_manager


def _noop_span(name: str, **attributes: Any) -> AbstractContextManager[SpanLike]:
    return NOOP


span = _span if ENABLED else _noop_span
"""``span(name, **attributes)``: a context manager around one unit of work (see the module
docstring)."""


def request_span(
    method: str, headers: Iterable[tuple[bytes, bytes]], request_id: str
) -> AbstractContextManager[SpanLike]:
    """The span of one HTTP request. When one is current already (FastAPI's own, or an
    ASGI instrumentation's), it only gets the request id and NOOP is returned: one request,
    one server span. Otherwise a new server span, child of the caller's ``traceparent``."""
    if not ENABLED:
        return NOOP
    tracer = _tracer()
    if tracer is None:
        return NOOP
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attribute("cqrskit.request_id", request_id)
        return NOOP
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
    context_manager: AbstractContextManager[SpanLike] = tracer.start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "cqrskit.request_id": request_id},
    )
    return context_manager


def finish_request(span: SpanLike, method: str, route: str | None, status: int) -> None:
    """Name the request's span after its route template, with the status it answered."""
    if span is NOOP:
        return
    real: Any = span
    if route is not None:
        real.update_name(f"{method} {route}")
        real.set_attribute("http.route", route)
    real.set_attribute("http.response.status_code", status)
    if status >= 500:
        real.set_status(trace.StatusCode.ERROR)
