"""The kept events of a PostgreSQL store (``backends.postgres._tail``), in memory."""

from __future__ import annotations

from cqrskit import RecordedEvent
from cqrskit.backends.postgres._tail import KEEP, Tail


def event(position: int, payload: bytes = b'{"amount":1}') -> RecordedEvent:
    return RecordedEvent(position, "acc-1", position, f"id-{position}", "Deposited", 1, payload,
                         b"{}", 1.5)  # fmt: skip


def positions(found: list[RecordedEvent] | None) -> list[int] | None:
    return None if found is None else [r.position for r in found]


def test_a_contiguous_run_up_to_the_head_or_the_limit() -> None:
    tail = Tail()
    tail.add(event(p) for p in (3, 4, 5, 6))
    assert positions(tail.read(2, 100, 6)) == [3, 4, 5, 6]
    assert positions(tail.read(2, 2, 6)) == [3, 4]
    assert positions(tail.read(4, 100, 6)) == [5, 6]
    assert positions(tail.read(2, 100, 4)) == [3, 4]  # a head heard of earlier: no further
    assert tail.read(6, 100, 6) is None  # nothing after the head
    assert tail.read(1, 100, 6) is None  # 2 is not kept
    assert tail.read(2, 100, 7) is None  # 7 is committed elsewhere, not kept


def test_a_gap_sends_the_read_to_the_database() -> None:
    tail = Tail()
    tail.add([event(1), event(2), event(4)])  # 3: another process's, or a rollback's hole
    assert tail.read(0, 100, 4) is None
    assert positions(tail.read(0, 2, 4)) == [1, 2]  # a full batch before the gap
    assert positions(tail.read(3, 100, 4)) == [4]


def test_out_of_order_commits_are_served_once_contiguous() -> None:
    tail = Tail()
    tail.add([event(2)])
    assert tail.read(0, 100, 2) is None
    tail.add([event(1)])
    assert positions(tail.read(0, 100, 2)) == [1, 2]


def test_sealed_payloads_are_not_kept() -> None:
    tail = Tail()
    sealed = b'{"member":"m-1","$sealed":["m-1",["email"],"dG9rZW4="]}'
    tail.add([event(1), event(2, sealed), event(3)])
    assert positions(tail.read(0, 100, 1)) == [1]
    assert tail.read(1, 100, 3) is None


def test_bounded_keeping_the_last_added() -> None:
    tail = Tail()
    for p in range(1, 3 * KEEP + 1):
        tail.add([event(p)])
        assert len(tail._events) <= 2 * KEEP
    last = 3 * KEEP
    assert positions(tail.read(last - KEEP, KEEP, last)) == list(range(last - KEEP + 1, last + 1))
    assert tail.read(0, 10, last) is None  # long dropped
