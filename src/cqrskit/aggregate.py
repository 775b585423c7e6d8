"""Event-sourced aggregates: decide, record an event, apply it. No I/O, no metaclasses.

::

    class Account(Aggregate):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.balance = 0

        def deposit(self, amount: int) -> None:      # decide
            if amount <= 0:
                raise ValueError("amount must be positive")
            self.record(Deposited(amount=amount))    # record (applies it too)

        def apply(self, event: Event) -> None:       # state changes only here
            match event:
                case Deposited(amount=amount):
                    self.balance += amount
"""

from __future__ import annotations

from typing import Any, ClassVar

from .messages import Event

__all__ = ["Aggregate"]


class Aggregate:
    stream_prefix: ClassVar[str] = ""
    """Streams of this aggregate are named ``f"{stream_prefix}-{id}"`` (defaults to the
    lower-cased class name). ``RecordedEvent.aggregate_id`` and ``stream_type`` split a
    stream's name at its first ``-`` (ids may contain ``-``: UUIDs do), so they give this
    aggregate's id and prefix only when the prefix has no ``-`` of its own."""

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        """Number of events applied, recorded ones included."""
        self._pending: list[Event] = []

    @classmethod
    def stream_id(cls, id: str) -> str:
        return f"{cls.stream_prefix or cls.__name__.lower()}-{id}"

    def apply(self, event: Event) -> None:
        """Change state from one event. Override with a ``match`` on the event types."""
        raise TypeError(f"{type(self).__qualname__} does not apply {type(event).__qualname__}")

    def record(self, event: Event) -> None:
        """Apply a new event and keep it to be saved."""
        self.apply(event)
        self.version += 1
        self._pending.append(event)

    def replay(self, event: Event) -> None:
        """Apply a stored event (loading)."""
        self.apply(event)
        self.version += 1

    @property
    def pending_events(self) -> list[Event]:
        return list(self._pending)

    @property
    def committed_version(self) -> int:
        """The version the stream had when this aggregate was loaded (or last saved)."""
        return self.version - len(self._pending)

    def mark_saved(self) -> None:
        self._pending.clear()

    @property
    def exists(self) -> bool:
        return self.version > 0

    # -- snapshots (opt in by overriding both) ------------------------------------------------

    def snapshot_state(self) -> Any:
        """State as msgspec-encodable data, or None when this aggregate takes no snapshots."""
        return None

    def restore_state(self, state: Any) -> None:
        raise TypeError(f"{type(self).__qualname__} does not restore snapshots")
