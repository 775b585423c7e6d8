"""Idempotent commands on every backend: once per key and caller, the answer replayed,
another request with the key refused, concurrent duplicates executed once, a failure
leaves the key free, keys expire and are purged, and a process killed between the commit
and the answer leaves an answer to replay."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cqrskit import IdempotencyKey, IdempotencyKeyReused, InvalidIdempotencyKey
from tests.integration import _once_app
from tests.integration._once_app import Accounts, Nothing, OnlyOnce, Open, OpenTwo, Receipt


@pytest.fixture
async def app(url: str) -> AsyncIterator[Accounts]:
    Accounts.runs = 0
    async with Accounts(url, run_projections=False) as opened:
        yield opened


def key(name: str = "k1", fingerprint: str = "fp", scope: str = "") -> IdempotencyKey:
    return IdempotencyKey(name, fingerprint, scope)


async def test_a_repeat_is_answered_from_the_store_and_stores_nothing(app: Accounts) -> None:
    first = await app.dispatch(Open("a"), idempotency=key())
    head = await app.store.head_position()
    again = await app.dispatch(Open("a"), idempotency=key())
    # The repeat's handler ran (the key is looked up only when its commit fails on it)
    # and made another id: its effects were never stored, the first answer is given.
    assert Accounts.runs == 2
    assert (again.value, again.position, again.replayed) == (first.value, first.position, True)
    assert isinstance(again.value, Receipt)  # decoded into the command's result type
    assert first.replayed is False
    assert first.position == head
    assert await app.store.head_position() == head


async def test_the_key_with_another_request_is_refused(app: Accounts) -> None:
    await app.dispatch(Open("a"), idempotency=key(fingerprint="one"))
    with pytest.raises(IdempotencyKeyReused):
        await app.dispatch(Open("b"), idempotency=key(fingerprint="two"))
    assert len(await app.store.read_all(0)) == 1


async def test_keys_are_per_caller(app: Accounts) -> None:
    a = await app.dispatch(Open("a"), idempotency=key(scope="alice"))
    b = await app.dispatch(Open("a"), idempotency=key(scope="bob"))
    assert a.value != b.value
    assert Accounts.runs == 2


async def test_sixteen_at_once_execute_once(app: Accounts) -> None:
    results = await asyncio.gather(*(app.dispatch(Open("a"), idempotency=key()) for _ in range(16)))
    assert len({r.value.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(await app.store.read_all(0)) == 1


async def test_a_repeat_whose_handler_now_fails_gets_the_first_answer(app: Accounts) -> None:
    Accounts.done_once = False
    first = await app.dispatch(OnlyOnce(), idempotency=key())
    # The same request again, whose handler fails this time (as a PATCH whose version
    # the first request moved would): answered from the store all the same.
    again = await app.dispatch(OnlyOnce(), idempotency=key())
    assert (again.value, again.replayed) == (first.value, True)
    with pytest.raises(RuntimeError, match="already done"):  # without the key: its failure
        await app.dispatch(OnlyOnce())


async def test_a_failure_stores_nothing_and_the_key_may_be_used_again(app: Accounts) -> None:
    with pytest.raises(ValueError, match="title"):
        await app.dispatch(Open(""), idempotency=key())
    with pytest.raises(RuntimeError):
        await app.dispatch(OpenTwo("x", fail_after=True), idempotency=key("k2"))
    assert await app.store.head_position() == 0  # the held appends were never made
    done = await app.dispatch(Open("a"), idempotency=key())
    assert done.replayed is False


async def test_two_streams_commit_together(app: Accounts) -> None:
    result = await app.dispatch(OpenTwo("x"), idempotency=key())
    log = await app.store.read_all(0)
    assert [r.stream_id for r in log] == [f"account-{id}" for id in result.value]
    assert len({r.recorded_at for r in log}) == 1
    assert result.position == log[-1].position
    assert (await app.dispatch(OpenTwo("x"), idempotency=key())).value == result.value


async def test_a_command_that_appends_nothing_is_remembered_too(app: Accounts) -> None:
    first = await app.dispatch(Nothing(), idempotency=key())
    again = await app.dispatch(Nothing(), idempotency=key())
    assert (first.value, again.value, again.replayed) == ("nothing to do",) * 2 + (True,)


async def test_keys_expire_and_are_purged(url: str) -> None:
    async with Accounts(url, run_projections=False, idempotency_ttl=0.2) as app:
        first = await app.dispatch(Open("a"), idempotency=key())
        await asyncio.sleep(0.3)
        again = await app.dispatch(Open("a"), idempotency=key())  # expired: runs again
        assert again.replayed is False
        assert again.value != first.value
        await asyncio.sleep(0.3)
        assert await app.purge_idempotency_keys() == 1


def test_a_key_is_1_to_255_printable_ascii() -> None:
    IdempotencyKey("a" * 255, "fp")
    for bad in ("", "a" * 256, "é", "tab\there"):
        with pytest.raises(InvalidIdempotencyKey):
            IdempotencyKey(bad, "fp")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])  # memory dies with its process
async def test_killed_between_the_commit_and_the_answer_the_retry_replays(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'data'}"
        if backend == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        _once_app.__file__,
        url,
        "k-crash",
        "title",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -9, err.decode()
    assert out == b"committed\n"
    async with Accounts(url, run_projections=False) as app:
        Accounts.runs = 0
        retried = await app.dispatch(Open("title"), idempotency=key("k-crash", "fp-title"))
        assert retried.replayed is True
        (event,) = await app.store.read_all(0)  # the retry stored nothing
        assert event.stream_id == f"account-{retried.value.id}"
        assert retried.position == event.position
