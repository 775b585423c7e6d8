"""Prometheus metrics of one app instance, in its own registry (tests build many apps).

Command and query counts and latencies come from cqrskit's ``timing_middleware``; HTTP
requests (by route template, never the raw path, so the series stay bounded) from
``cqrskit.fastapi.connect``'s ``on_request``; the projection gauges are set from the
runner's status at scrape time, the relays' lag from what they report in the read
database (``cqrskit.relay_reports``: no broker is asked); the process's CPU, memory, file
descriptors, garbage collections and Python version from prometheus_client's own
collectors, registered here too (they live in its default registry, which this one is
not).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from cqrskit import PROJECTION_STATES, ProjectionStatus, RelayReport

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.commands = Counter(
            "social_commands", "Commands dispatched", ["command", "outcome"], registry=r
        )
        self.command_seconds = Histogram(
            "social_command_seconds", "Command latency", ["command"], buckets=_BUCKETS, registry=r
        )
        self.queries = Counter("social_queries", "Queries asked", ["query", "outcome"], registry=r)
        self.query_seconds = Histogram(
            "social_query_seconds", "Query latency", ["query"], buckets=_BUCKETS, registry=r
        )
        self.http_requests = Counter(
            "social_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "social_http_request_duration_seconds",
            "HTTP request latency in the app, from the request's headers to its answer's last byte",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.position = Gauge(
            "social_projection_position", "Last position processed", ["projection"], registry=r
        )
        self.head = Gauge("social_projection_head", "Head of the log", ["projection"], registry=r)
        self.lag_events = Gauge(
            "social_projection_lag_events", "Events not processed yet", ["projection"], registry=r
        )
        self.lag_seconds = Gauge(
            "social_projection_lag_seconds",
            "Age of the oldest unprocessed event",
            ["projection"],
            registry=r,
        )
        self.state = Gauge(
            "social_projection_state",
            "1 for the projection's current state, 0 for the others",
            ["projection", "state"],
            registry=r,
        )
        self.parked = Gauge(
            "social_projection_parked", "Events parked (not applied)", ["projection"], registry=r
        )
        self.events_per_second = Gauge(
            "social_projection_events_per_second",
            "Events applied per second (recent rate)",
            ["projection"],
            registry=r,
        )
        self.relay_lag_events = Gauge(
            "social_relay_lag_events",
            "Events of the log the relay's broker stream has not acknowledged yet",
            ["stream"],
            registry=r,
        )

    def observe(self, kind: str, name: str, seconds: float, ok: bool) -> None:
        """The ``timing_middleware`` callback."""
        outcome = "ok" if ok else "error"
        if kind == "command":
            self.commands.labels(name, outcome).inc()
            self.command_seconds.labels(name).observe(seconds)
        else:
            self.queries.labels(name, outcome).inc()
            self.query_seconds.labels(name).observe(seconds)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """The ``on_request`` callback of ``cqrskit.fastapi.connect``."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)

    def render(
        self, statuses: Iterable[ProjectionStatus], relays: Iterable[RelayReport] = ()
    ) -> bytes:
        for s in statuses:
            self.position.labels(s.name).set(s.position)
            self.head.labels(s.name).set(s.head)
            self.lag_events.labels(s.name).set(s.lag_events)
            self.lag_seconds.labels(s.name).set(s.lag_seconds)
            self.parked.labels(s.name).set(s.parked)
            self.events_per_second.labels(s.name).set(s.events_per_second)
            for state in PROJECTION_STATES:  # every state has its series: alerts see 0 -> 1 changes
                self.state.labels(s.name, state).set(1 if s.state == state else 0)
        for relay in relays:
            if relay.lag_events is not None:  # None: no position reported yet
                self.relay_lag_events.labels(relay.stream).set(relay.lag_events)
        return generate_latest(self.registry)
