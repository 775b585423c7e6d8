"""Spans (cqrskit._telemetry): recorded with the OpenTelemetry SDK when one is set up, a
shared no-op when the API is missing or nobody set up an SDK. The SDK's provider is handed
to the module (``_telemetry.provider``), never made global: other tests see no change."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from cqrskit import _telemetry
from tests.unit.test_tracing import Notebook, Notes, make_api

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(_telemetry, "provider", provider)
    yield exporter
    provider.shutdown()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with Notes() as notes:
        transport = httpx.ASGITransport(make_api(notes, []))
        async with httpx.AsyncClient(transport=transport, base_url="http://notes") as http:
            yield http


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_request_is_a_server_span_with_dispatch_and_append_inside(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    headers = {"X-Request-ID": "abc-123", "traceparent": TRACEPARENT}
    resp = await client.post("/notes", json={"text": "milk"}, headers=headers)
    assert resp.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"POST /notes", "cqrskit.dispatch", "cqrskit.append"}
    request, dispatch, append = (
        spans["POST /notes"],
        spans["cqrskit.dispatch"],
        spans["cqrskit.append"],
    )
    assert request.kind == trace.SpanKind.SERVER
    assert dict(request.attributes or {}) == {
        "http.request.method": "POST",
        "cqrskit.request_id": "abc-123",
        "http.route": "/notes",
        "http.response.status_code": 200,
    }
    # The caller's trace goes on; each span is the child of the one around it.
    assert request.context.trace_id == int(TRACEPARENT.split("-")[1], 16)
    assert request.parent is not None
    assert request.parent.span_id == int("b7ad6b7169203331", 16)
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == request.context.span_id
    assert append.parent is not None
    assert append.parent.span_id == dispatch.context.span_id
    assert dict(dispatch.attributes or {}) == {"cqrskit.command": "Note"}
    assert dict(append.attributes or {}) == {
        "cqrskit.stream_id": Notebook.stream_id("milk"),
        "cqrskit.events": 1,
    }


async def test_a_server_error_marks_the_request_span(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    with pytest.raises(RuntimeError):  # no catch-all in this app: the transport re-raises
        await client.get("/boom")
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /boom"
    assert span.status.status_code == trace.StatusCode.ERROR
    assert (span.attributes or {})["http.response.status_code"] == 500


async def test_a_span_already_current_is_annotated_not_doubled(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    """FastAPI's own server span (or an ASGI instrumentation's) stays the request's one."""
    tracer = _telemetry.provider.get_tracer("server")
    with tracer.start_as_current_span("theirs"):
        await client.get("/notes/1", headers={"X-Request-ID": "abc-123"})
    (span,) = exporter.get_finished_spans()
    assert span.name == "theirs"
    assert (span.attributes or {})["cqrskit.request_id"] == "abc-123"


def test_span_leaves_out_none_and_prefixes_names(exporter: InMemorySpanExporter) -> None:
    with _telemetry.span("work", stream_id="s-1", missing=None) as s:
        s.set_attribute("cqrskit.more", 2)
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {}) == {"cqrskit.stream_id": "s-1", "cqrskit.more": 2}


def test_without_an_sdk_set_up_spans_are_the_shared_noop() -> None:
    """In a process of its own: no test's tracer provider can be set up there."""
    code = """
from opentelemetry import trace
from cqrskit import _telemetry
assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
assert _telemetry.ENABLED
assert _telemetry.span("work", n=1) is _telemetry.NOOP
assert _telemetry.request_span("GET", [], "r-1") is _telemetry.NOOP
print("noop")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "noop"


def _fresh_copy_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A separate copy of the module, imported while ``opentelemetry`` cannot be: the
    real module (which the framework already imported) stays as it is."""
    for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.propagate"):
        monkeypatch.setitem(sys.modules, name, None)
    path = _telemetry.__file__
    spec = importlib.util.spec_from_file_location("cqrskit._telemetry_without_otel", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_the_api_every_span_is_one_shared_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    module: Any = _fresh_copy_without_opentelemetry(monkeypatch)
    assert module.ENABLED is False
    first = module.span("a", x=1)
    assert first is module.span("b") is module.NOOP
    with first as s:
        s.set_attribute("k", "v")
    assert module.request_span("GET", [(b"traceparent", TRACEPARENT.encode())], "r") is first
    module.finish_request(first, "GET", "/x", 500)
    with pytest.raises(KeyError), module.span("c"):
        raise KeyError("exceptions pass through")


def test_a_globally_set_up_sdk_records_the_spans() -> None:
    """The usual set-up (``trace.set_tracer_provider``), in a process of its own."""
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from cqrskit import _telemetry
assert _telemetry.span("before") is _telemetry.NOOP
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with _telemetry.span("after", n=1):
    pass
print([(s.name, dict(s.attributes)) for s in exporter.get_finished_spans()])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[('after', {'cqrskit.n': 1})]"
