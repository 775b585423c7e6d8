"""A relay from an app's event log to a broker: NATS JetStream, for any cqrskit app.

::

    cqrskit --app myapp.main:app relay --nats-url nats://127.0.0.1:4222
    social relay --nats-url nats://127.0.0.1:4222           # stream SOCIAL

Every event of the log is published once, in log order, to the JetStream stream
``<STREAM>`` on the subject ``<prefix>.<EventType>``, with the header ``Nats-Msg-Id`` (the
event's id) and a JSON body (:mod:`cqrskit.relay.message`). Consumers of the stream see
each event exactly once, in log order, whatever happens to relay processes (killed,
restarted, several at once) or to the broker: see docs/relay.md and
:mod:`cqrskit.relay.loop` for how.

- :class:`Relay`: the loop, against the :class:`Publisher` port; :meth:`Relay.for_app`
  wires it to an open :class:`~cqrskit.App` (its store and lease);
- :class:`JetStreamPublisher`: the port on NATS JetStream (nats-py);
  :class:`MemoryPublisher`: the in-memory double, with the same guarantees, for tests;
- :func:`to_message` (:class:`RelayMessage`): what is published for one event;
  :func:`position_of`: the log position a published body carries;
- :class:`RelayStatus`, :func:`relay_status`: lag in events and seconds, from the relay
  or from any process that reaches the broker; :func:`prometheus_text`,
  :func:`serve_metrics`: as gauges. Without the broker: the relay reports itself in the
  app's read database (:mod:`cqrskit.relay.report`), which :func:`cqrskit.relay_reports`
  reads in any process (``GET /ops/relays``);
- errors: :class:`RelayError` and below (:mod:`cqrskit.relay.errors`).

This package is the ``nats`` extra (nats-py): ``import cqrskit`` never imports it.
"""

from .errors import BrokerRefused, BrokerUnavailable, RelayError, StreamMoved
from .jetstream import JetStreamPublisher, check_nats_url
from .loop import Relay
from .message import (
    RelayMessage,
    check_stream_name,
    check_subject_prefix,
    default_stream,
    position_of,
    subject_for,
    to_message,
)
from .metrics import prometheus_text, serve_metrics
from .publisher import MemoryPublisher, Publisher, StreamEnd
from .status import RelayStatus, relay_status

__all__ = [
    "BrokerRefused",
    "BrokerUnavailable",
    "JetStreamPublisher",
    "MemoryPublisher",
    "Publisher",
    "Relay",
    "RelayError",
    "RelayMessage",
    "RelayStatus",
    "StreamEnd",
    "StreamMoved",
    "check_nats_url",
    "check_stream_name",
    "check_subject_prefix",
    "default_stream",
    "position_of",
    "prometheus_text",
    "relay_status",
    "serve_metrics",
    "subject_for",
    "to_message",
]
