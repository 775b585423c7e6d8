"""Operating projections on every backend (memory, SQLite, PostgreSQL): a poison event
parked with its stream held while the others flow, retry after the fix in stream order,
skip, pause and resume, restart after an error (by an operator, or by a rebuild), rewind;
the read model always equal to what a rebuild gives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from cqrskit import InvalidAction, UnknownProjection
from tests.integration._bank import POISON, Bank, Deposited


@pytest.fixture
async def bank(url: str) -> AsyncIterator[Bank]:
    POISON.clear()
    async with Bank(url, min_position_timeout=10) as app:
        yield app
    POISON.clear()


async def deposit(app: Bank, account: str, *amounts: int) -> int:
    result = await app.append(account, [Deposited(a) for a in amounts])
    return result.position


async def caught_up(app: Bank, *names: str) -> None:
    head = await app.store.head_position()
    await app.wait_for(names or ("balances",), head)


async def balances(app: Bank) -> dict[str, tuple[int, str]]:
    rows = await app.db.read(
        lambda tx: tx.fetchall("SELECT account, balance, amounts FROM balances")
    )
    return {str(a): (int(b), str(s)) for a, b, s in rows}


async def status_of(app: Bank, name: str) -> dict[str, object]:
    return next(s.to_dict() for s in await app.status() if s.name == name)


async def eventually(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert await check()  # type: ignore[operator]
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_poison_event_is_parked_and_holds_only_its_stream(bank: Bank) -> None:
    POISON.add(13)
    await deposit(bank, "acct-a", 1)
    bad = await deposit(bank, "acct-a", 13)
    await deposit(bank, "acct-b", 5)
    await deposit(bank, "acct-a", 2, 3)
    await deposit(bank, "acct-b", 6)
    await caught_up(bank)  # the checkpoint went past the poison event

    assert await balances(bank) == {"acct-a": (1, "1"), "acct-b": (11, "5,6")}
    status = await status_of(bank, "balances")
    assert status["state"] == "running"
    assert status["error"] is None
    assert status["parked"] == 3
    parked = await bank.operations.parked("balances")
    assert [(p.position, p.stream_id, p.behind) for p in parked] == [
        (bad, "acct-a", None),
        (bad + 2, "acct-a", bad),
        (bad + 3, "acct-a", bad),
    ]
    assert "cannot handle 13" in parked[0].error
    assert parked[0].attempts >= 2
    assert parked[0].event_type == "Deposited"

    # The fix, then a retry of the stream: applied in its order, the stream goes on.
    POISON.clear()
    action = await bank.operations.retry("balances", stream_id="acct-a", by="ops", reason="fixed")
    assert (action.state, action.result) == ("done", "applied 3 events")
    await deposit(bank, "acct-a", 4)
    await caught_up(bank)
    assert await balances(bank) == {"acct-a": (23, "1,13,2,3,4"), "acct-b": (11, "5,6")}
    assert (await status_of(bank, "balances"))["parked"] == 0

    # Equal to a rebuild's.
    before = await balances(bank)
    await bank.rebuild("balances")
    assert await balances(bank) == before


async def test_a_retry_that_fails_again_keeps_the_stream_held(bank: Bank) -> None:
    POISON.add(13)
    bad = await deposit(bank, "acct-a", 13)
    await deposit(bank, "acct-a", 2)
    await caught_up(bank)
    action = await bank.operations.retry("balances", by="ops")
    assert action.state == "failed"
    assert f"stream acct-a failed again at position {bad}" in (action.result or "")
    parked = await bank.operations.parked("balances")
    assert [p.position for p in parked] == [bad, bad + 1]
    assert parked[0].attempts >= 3  # the runner's tries, then the operator's
    assert await balances(bank) == {}


async def test_skip_gives_up_on_a_stream_s_parked_events_with_a_reason(bank: Bank) -> None:
    POISON.add(13)
    await deposit(bank, "acct-a", 1, 13, 2)
    await caught_up(bank)
    with pytest.raises(InvalidAction, match="reason"):
        await bank.operations.skip("balances", stream_id="acct-a", reason=" ")
    action = await bank.operations.skip(
        "balances", stream_id="acct-a", by="alice", reason="bad import"
    )
    assert (action.state, action.result) == ("done", "skipped 2 events")
    await deposit(bank, "acct-a", 4)
    await caught_up(bank)
    assert await balances(bank) == {"acct-a": (5, "1,4")}
    history = await bank.operations.history("balances")
    assert [(a.action, a.requested_by, a.reason, a.state) for a in history] == [
        ("skip", "alice", "bad import", "done")
    ]


async def test_pause_and_resume(bank: Bank, url: str) -> None:
    first = await deposit(bank, "acct-a", 1)
    await caught_up(bank)
    action = await bank.operations.pause("balances", by="ops", reason="migration")
    assert action.state == "done"
    assert (await status_of(bank, "balances"))["state"] == "paused"
    await deposit(bank, "acct-a", 2)
    await asyncio.sleep(0.5)
    status = await status_of(bank, "balances")
    assert (status["state"], status["position"]) == ("paused", first)
    await caught_up(bank, "totals")  # the others go on

    if not url.startswith("memory"):  # a pause outlives the process
        await bank.close()
        await bank.open()
        assert (await status_of(bank, "balances"))["state"] == "paused"
    action = await bank.operations.resume("balances", by="ops")
    assert action.state == "done"
    await caught_up(bank)
    assert await balances(bank) == {"acct-a": (3, "1,2")}


async def test_a_projection_stopped_in_error_restarts_without_a_restart_of_the_process(
    bank: Bank,
) -> None:
    POISON.add(13)
    await deposit(bank, "acct-a", 1)
    bad = await deposit(bank, "acct-b", 13)

    async def in_error() -> bool:
        return (await status_of(bank, "totals"))["state"] == "error"

    await eventually(in_error)
    status = await status_of(bank, "totals")
    error = status["error"]
    assert isinstance(error, dict)
    assert (error["position"], error["event_type"]) == (bad, "Deposited")
    assert error["stream_id"] == "acct-b"
    assert "cannot handle 13" in error["message"]
    assert error["attempts"] == 3
    assert error["event_id"]
    assert error["since"] > 0
    assert status["position"] == bad - 1

    POISON.clear()
    action = await bank.operations.restart("totals", by="ops")
    assert action.state == "done", action.result
    await caught_up(bank, "totals")
    assert (await status_of(bank, "totals"))["state"] == "running"


async def test_a_rebuild_restarts_a_projection_stopped_in_error(bank: Bank) -> None:
    POISON.add(13)
    await deposit(bank, "acct-a", 13)

    async def in_error() -> bool:
        return (await status_of(bank, "totals"))["state"] == "error"

    await eventually(in_error)
    POISON.clear()
    await bank.rebuild("totals")
    await deposit(bank, "acct-a", 2)  # applied by the running runner, not only the rebuild
    await caught_up(bank, "totals")
    assert (await status_of(bank, "totals"))["state"] == "running"
    total = await bank.db.read(lambda tx: tx.fetchone("SELECT total FROM totals"))
    assert total == (15,)


async def test_rewind_to_a_position_and_to_a_time(bank: Bank) -> None:
    await deposit(bank, "acct-a", 1, 2)
    middle = await deposit(bank, "acct-a", 3)
    await asyncio.sleep(0.05)
    moment = time.time()
    await asyncio.sleep(0.05)
    await deposit(bank, "acct-a", 4)
    await caught_up(bank)
    await bank.operations.pause("balances", by="ops")

    action = await bank.operations.rewind("balances", position=2, by="ops", reason="test")
    assert action.state == "done", action.result
    assert await balances(bank) == {"acct-a": (3, "1,2")}
    assert (await status_of(bank, "balances"))["position"] == 2

    action = await bank.operations.rewind("balances", to_time=moment, by="ops")
    assert f"position {middle}" in (action.result or "")
    assert await balances(bank) == {"acct-a": (6, "1,2,3")}

    await bank.operations.resume("balances", by="ops")
    await caught_up(bank)
    assert await balances(bank) == {"acct-a": (10, "1,2,3,4")}


async def test_a_rebuild_parks_what_the_live_runner_parked(bank: Bank) -> None:
    POISON.add(13)
    await deposit(bank, "acct-a", 1, 13, 2)
    await deposit(bank, "acct-b", 3)
    await caught_up(bank)
    live = [(p.position, p.behind) for p in await bank.operations.parked("balances")]
    before = await balances(bank)
    await bank.rebuild("balances")
    assert [(p.position, p.behind) for p in await bank.operations.parked("balances")] == live
    assert await balances(bank) == before
    assert (await status_of(bank, "balances"))["parked"] == 2


async def test_bad_requests_are_refused_before_anything_is_recorded(bank: Bank) -> None:
    with pytest.raises(UnknownProjection, match="balances, totals"):
        await bank.operations.pause("nope")
    with pytest.raises(InvalidAction, match="does not park"):
        await bank.operations.retry("totals")
    with pytest.raises(InvalidAction, match="exactly one"):
        await bank.operations.rewind("balances")
    with pytest.raises(InvalidAction, match="negative"):
        await bank.operations.rewind("balances", position=-1)
    assert await bank.operations.history() == []
