"""The context of one command dispatch: correlation, and the positions it reached.

The command bus opens a context; the repository reads its ids into each event's metadata
and records the positions it saw (loaded streams' last events) and appended, so the bus
can answer a command with its consistency token without the handler passing it along.

A command run once per idempotency key (:mod:`cqrskit.idempotency`) holds its appends
back in ``held``; ``commit`` appends them, with the key and the answer, when the handler
returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .messages import Metadata, new_id

if TYPE_CHECKING:
    from .eventstore import StreamAppend

__all__ = ["CommandContext", "current_context"]


@dataclass(slots=True)
class CommandContext:
    command_id: str = field(default_factory=new_id)
    correlation_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    position: int = 0
    """Highest position this command appended or based a decision on."""
    held: list[StreamAppend] | None = None
    """Appends held back until the handler returns (None: appended as they come)."""
    commit: Callable[[Any], Awaitable[None]] | None = None
    """Called with the handler's value when it returns: appends what is held."""

    def saw(self, position: int) -> None:
        if position > self.position:
            self.position = position

    def metadata(self) -> Metadata:
        return Metadata(
            correlation_id=self.correlation_id or self.command_id,
            causation_id=self.command_id,
            extra=self.extra,
        )


_current: ContextVar[CommandContext | None] = ContextVar("cqrskit_command", default=None)


def current_context() -> CommandContext | None:
    return _current.get()


def _set(ctx: CommandContext | None) -> object:
    return _current.set(ctx)


def _reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
