"""Throttling of failed logins, per account: password guessing gets slower and slower.

An account (the address as compared, :func:`~social.domain.values.email_key`, registered
or not: probing unknown addresses counts too) may fail ``free`` logins in a row; after
that each attempt waits for a delay that doubles with every further failure, up to
``max_delay`` (429 with ``Retry-After`` meanwhile, whatever the password). A success
clears the account's count, and failures older than ``forget_after`` are forgotten.

The count lives in this process (a bounded table, the least recently failed accounts
dropped first). With several API processes each keeps its own: the guesses an attacker
gets grow with the processes, not with time, which is what matters against guessing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..domain import SocialError

__all__ = ["LoginThrottle", "TooManyAttempts"]


class TooManyAttempts(SocialError):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__("Too many failed logins for this account, try again later")


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    blocked_until: float


class LoginThrottle:
    def __init__(
        self,
        *,
        free: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        forget_after: float = 900.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.capacity = capacity
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def check(self, account: str) -> None:
        """Raise :class:`TooManyAttempts` while ``account`` must wait."""
        entry = self._current(account)
        if entry is not None and entry.blocked_until > self._clock():
            raise TooManyAttempts(entry.blocked_until - self._clock())

    def failed(self, account: str) -> int:
        """Count a failure; returns how many in a row ``account`` has now."""
        now = self._clock()
        entry = self._current(account) or _Failures(0, now, now)
        entry.count += 1
        entry.last = now
        beyond = entry.count - self.free
        if beyond >= 0:
            entry.blocked_until = now + min(self.max_delay, self.base_delay * 2 ** min(beyond, 30))
        self._failures[account] = entry
        self._failures.move_to_end(account)
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)
        return entry.count

    def succeeded(self, account: str) -> None:
        self._failures.pop(account, None)

    def _current(self, account: str) -> _Failures | None:
        entry = self._failures.get(account)
        if entry is not None and self._clock() - entry.last > self.forget_after:
            del self._failures[account]
            return None
        return entry
