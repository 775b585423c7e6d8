"""Failed logins per account: free ones, then a doubling wait, forgotten after a while."""

from __future__ import annotations

import pytest

from social.application.throttle import LoginThrottle, TooManyAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def waits(throttle: LoginThrottle, account: str) -> int | None:
    try:
        throttle.check(account)
    except TooManyAttempts as exc:
        return exc.retry_after
    return None


def test_free_failures_then_a_doubling_wait_capped() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=3, base_delay=2.0, max_delay=10.0, clock=clock)
    for _ in range(2):
        throttle.failed("ann")
        assert waits(throttle, "ann") is None
    seen = []
    for _ in range(5):
        throttle.failed("ann")
        seen.append(waits(throttle, "ann"))
    assert seen == [2, 4, 8, 10, 10]
    assert waits(throttle, "bob") is None  # per account
    clock.now += 10.5
    assert waits(throttle, "ann") is None  # the wait is over; the count is not
    throttle.failed("ann")
    assert waits(throttle, "ann") == 10


def test_a_success_clears_the_count() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=2, clock=clock)
    throttle.failed("ann")
    throttle.succeeded("ann")
    throttle.failed("ann")
    assert waits(throttle, "ann") is None


def test_old_failures_are_forgotten() -> None:
    clock = Clock()
    throttle = LoginThrottle(free=2, forget_after=60, clock=clock)
    throttle.failed("ann")
    clock.now += 61
    assert throttle.failed("ann") == 1


def test_the_table_is_bounded() -> None:
    throttle = LoginThrottle(capacity=3, clock=Clock())
    for name in "abcd":
        throttle.failed(name)
    assert throttle.failed("a") == 1  # the least recently failed was dropped
    assert throttle.failed("d") == 2


def test_retry_after_is_a_whole_positive_number_of_seconds() -> None:
    assert TooManyAttempts(0.01).retry_after == 1
    assert TooManyAttempts(2.2).retry_after == 3
    with pytest.raises(TooManyAttempts):
        raise TooManyAttempts(5)
