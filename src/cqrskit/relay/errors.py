"""What the relay raises, beside the core's tree (:mod:`cqrskit.errors`)::

    CqrsKitError
    └── RelayError                the relay cannot go on as configured
        ├── BrokerUnavailable     the broker cannot be reached, or did not acknowledge in time
        ├── BrokerRefused         the broker refused the stream as configured (subjects
        │                         taken by another stream, a stream whose last message is
        │                         not the relay's...): an operator must act
        └── StreamMoved           the stream did not end where this relay expected (another
                                  relay published first): re-read its end and go on

:class:`~cqrskit.relay.Relay` retries the first two with backoff, one log line each, and
takes the third as a matter of course.
"""

from __future__ import annotations

from ..errors import CqrsKitError

__all__ = ["BrokerRefused", "BrokerUnavailable", "RelayError", "StreamMoved"]


class RelayError(CqrsKitError):
    """Root of the relay's errors."""


class BrokerUnavailable(RelayError):
    """The broker cannot be reached, or did not acknowledge in time. Some of the messages
    of the batch in flight may be stored: the stream's end says which."""


class BrokerRefused(RelayError):
    """The broker answered, but not as the relay needs: the message says what to fix."""


class StreamMoved(RelayError):
    """The stream's end was not the one the batch was published after."""
