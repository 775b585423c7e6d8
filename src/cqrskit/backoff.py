"""Exponential backoff with full jitter: the one helper behind every retry in cqrskit.

Used by the command bus (conflicts), the projection runner (failing batches, a database
away), :func:`cqrskit.consistency.retry_read` and the HTTP client of an app.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["RetryPolicy", "backoff_delays"]


def backoff_delays(
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    *,
    attempts: int | None = None,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Delays to sleep between attempts: ``base * 2**i`` capped at ``max_delay``.

    With ``jitter`` each delay is drawn uniformly from ``[0, cap]`` ("full jitter"): clients
    that failed together do not retry together. With ``attempts`` it yields
    ``attempts - 1`` delays (one between each two attempts), else forever.
    """
    if base_delay < 0 or max_delay < 0:
        raise ValueError("delays must not be negative")
    draw = (rng or random).uniform
    i = 0
    while attempts is None or i < attempts - 1:
        cap = min(max_delay, base_delay * 2 ** min(i, 62))
        yield draw(0.0, cap) if jitter else cap
        i += 1


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing batch is retried before it is split to find the failing event."""

    attempts: int = 3
    """Tries of one batch (the first included)."""
    base_delay: float = 0.05
    """Pause after the first failure; doubles after each further one."""
    max_delay: float = 2.0

    def delays(self) -> Iterator[float]:
        return backoff_delays(self.base_delay, self.max_delay, attempts=self.attempts, jitter=False)
