"""The contract's guarantees, over real HTTP against a real process: atomic version checks,
exact counters under concurrency, durability across SIGKILL, rebuild equals live, and the
size of the eventual-consistency window."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e._support import (
    CONFLICT_MESSAGE,
    REPORT,
    Server,
    ServerFactory,
    User,
    all_posts,
    create_post,
    describe,
    expect,
    follow,
    get_user,
    login,
    percentile,
    position,
    register,
    run_cli,
    snapshot,
)

T = TypeVar("T")


def in_parallel(server: Server, calls: list[Callable[[httpx.Client], T]]) -> list[T]:
    """Run each call on its own thread and connection, released together by a barrier so
    they really race."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[httpx.Client], T]) -> None:
        try:
            with server.client(timeout=30) as http:
                http.get("/health")  # connect before the race starts
                barrier.wait(20)
                results[index] = call(http)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


def test_concurrent_patches_with_one_version_exactly_one_wins(
    client: httpx.Client, server: Server
) -> None:
    user = register(client)

    def patch(n: int) -> Callable[[httpx.Client], httpx.Response]:
        return lambda http: http.patch(
            f"/users/{user.id}",
            json={"version": user.version, "display_name": f"writer {n}"},
            headers=user.auth,
        )

    responses = in_parallel(server, [patch(n) for n in range(16)])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 15, [describe(r) for r in responses]
    (winner,) = [r for r in responses if r.status_code == 200]
    new_version = winner.json()["version"]
    for resp in responses:
        if resp.status_code == 409:
            assert resp.json() == {"error": CONFLICT_MESSAGE, "current_version": new_version}
    shown = get_user(client, user.id, position(winner))
    assert shown["version"] == new_version
    won_as = json.loads(winner.request.content)["display_name"]
    assert shown["display_name"] == won_as


def _follow(fan: User, target_id: str) -> Callable[[httpx.Client], int]:
    return lambda http: follow(http, fan, target_id)


def _unfollow(fan: User, target_id: str) -> Callable[[httpx.Client], int]:
    def call(http: httpx.Client) -> int:
        resp = http.delete(f"/users/{target_id}/followers/me", headers=fan.auth)
        assert expect(resp, 200) == {"following": False}
        return position(resp)

    return call


@pytest.mark.slow
def test_forty_concurrent_follows_count_exactly_forty(client: httpx.Client, server: Server) -> None:
    target = register(client)
    # Registration hashes a password: done in parallel to keep the test short.
    fans = in_parallel(server, [register for _ in range(40)])
    positions = in_parallel(server, [_follow(fan, target.id) for fan in fans])
    assert get_user(client, target.id, max(positions))["follower_count"] == 40
    # A second, concurrent round of the same follows changes nothing.
    again = in_parallel(server, [_follow(fan, target.id) for fan in fans])
    assert get_user(client, target.id, max(again))["follower_count"] == 40
    for fan in fans[:5]:
        assert get_user(client, fan.id, max(again))["following_count"] == 1
    # ...and concurrent unfollows of half of them bring it to exactly 20.
    gone = in_parallel(server, [_unfollow(fan, target.id) for fan in fans[:20]])
    assert get_user(client, target.id, max(gone))["follower_count"] == 20


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as http:
        alice = register(http, display_name="Alice")
        bob = register(http)
        carol = register(http)
        patched = http.patch(
            f"/users/{alice.id}",
            json={"version": alice.version, "display_name": "Alice v2"},
            headers=alice.auth,
        )
        alice_version = expect(patched, 200)["version"]
        posts = [create_post(http, alice, f"durable {i}")[0] for i in range(5)]
        follow(http, bob, alice.id)
        follow(http, carol, alice.id)
        follow(http, alice, bob.id)
        unfollow = http.delete(f"/users/{alice.id}/followers/me", headers=carol.auth)
        expect(unfollow, 200)
        last_post, _ = create_post(http, bob, "the very last acknowledged write")
    server.kill()  # right after the last answer: no graceful shutdown runs

    restarted = server_factory(server.storage)
    with restarted.client() as http:
        alice = login(http, alice)
        bob = login(http, bob)
        login(http, carol)
        # A new write gives a position that covers everything written before the crash.
        head = position(http.post("/posts", json={"content": "after crash"}, headers=bob.auth))
        shown = get_user(http, alice.id, head)
        assert shown["display_name"] == "Alice v2"
        assert shown["version"] == alice_version
        assert (shown["post_count"], shown["follower_count"], shown["following_count"]) == (
            5,
            1,
            1,
        )
        assert [p["id"] for p in all_posts(http, alice.id, head)] == posts[::-1]
        bob_posts = [p["id"] for p in all_posts(http, bob.id, head)]
        assert bob_posts[1:] == [last_post]
        assert get_user(http, carol.id, head)["following_count"] == 0
        # The write side kept the version too: the old version is now a conflict.
        stale = http.patch(
            f"/users/{alice.id}",
            json={"version": alice.version, "display_name": "x"},
            headers=alice.auth,
        )
        assert stale.status_code == 409, describe(stale)
        # The email is still taken.
        again = http.post("/users", json={"email": alice.email, "password": "whatever-123"})
        assert again.status_code == 409, describe(again)


@pytest.mark.slow
def test_writes_survive_repeated_sigkill(server_factory: ServerFactory) -> None:
    """Kill the process several times while writes are in flight; every acknowledged write is
    there afterwards and the counters equal what the posts list shows."""
    storage = None
    acknowledged: list[str] = []
    user: User | None = None
    for _round in range(2):
        server = server_factory(storage)
        storage = server.storage
        with server.client() as http:
            user = register(http) if user is None else login(http, user)
        stop = threading.Event()

        def writer(srv: Server = server, author: User = user, stop: threading.Event = stop) -> None:
            with srv.client() as http:
                while not stop.is_set():
                    try:
                        resp = http.post("/posts", json={"content": "x"}, headers=author.auth)
                    except httpx.TransportError:
                        return
                    if resp.status_code == 201:
                        acknowledged.append(resp.json()["id"])

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.4)
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(20)
    assert user is not None
    final = server_factory(storage)
    with final.client() as http:
        user = login(http, user)
        head = position(http.post("/posts", json={"content": "final"}, headers=user.auth))
        ids = [p["id"] for p in all_posts(http, user.id, head, limit=100)]
        assert len(ids) == len(set(ids))
        missing = set(acknowledged) - set(ids)
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged posts lost"
        assert get_user(http, user.id, head)["post_count"] == len(ids)


def _populate(http: httpx.Client, users: int = 6) -> tuple[list[str], int]:
    people = [register(http, display_name=f"P{i}") for i in range(users)]
    last = 0
    for i, person in enumerate(people):
        for j in range(i + 1):
            _, last = create_post(http, person, f"{i}/{j}")
        for other in people[:i]:
            last = follow(http, person, other.id)
    resp = http.delete(f"/users/{people[0].id}/followers/me", headers=people[-1].auth)
    expect(resp, 200)
    resp = http.patch(
        f"/users/{people[1].id}",
        json={"version": people[1].version, "display_name": "Renamed"},
        headers=people[1].auth,
    )
    expect(resp, 200)
    return [p.id for p in people], max(last, position(resp))


def _normalised(state: dict[str, Any]) -> dict[str, Any]:
    """Follower lists compared as sets: the contract does not fix their order."""
    out = dict(state)
    for key, value in state.items():
        if key.startswith(("followers ", "following ")):
            out[key] = {**value, "items": sorted(value["items"], key=lambda i: i["id"])}
    return out


@pytest.mark.slow
def test_rebuild_while_serving_gives_the_same_read_model(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as http:
        ids, last = _populate(http)
        before = _normalised(snapshot(http, ids, last))
        names = [row["name"] for row in expect(http.get("/projections"), 200)]
        assert names

        result = run_cli(["rebuild", *server.storage.args], timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        after_all = _normalised(snapshot(http, ids, last))
        assert after_all == before

        for name in names:
            result = run_cli(["rebuild", name, *server.storage.args], timeout=60)
            assert result.returncode == 0, f"rebuild {name}: {result.stdout}{result.stderr}"
            after_one = _normalised(snapshot(http, ids, last))
            assert after_one == before, f"read model differs after `social rebuild {name}`"

        # The service keeps projecting new events after a rebuild.
        fan = register(http)
        pos = follow(http, fan, ids[0])
        assert (
            get_user(http, ids[0], pos)["follower_count"]
            == before[f"user {ids[0]}"]["follower_count"] + 1
        )

    result = run_cli(["rebuild", "no-such-projection", *server.storage.args], timeout=60)
    assert result.returncode != 0, "rebuilding an unknown projection must fail"
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_consistency_window(
    client: httpx.Client, record_property: Callable[[str, object], None]
) -> None:
    """How long after a write's answer a read WITHOUT X-Min-Position sees it. Reported, not
    tightly asserted (the machine is shared)."""
    author = register(client)
    get_user(client, author.id, author.position)
    lags: list[float] = []
    for i in range(300):
        post_id, _ = create_post(client, author, f"lag {i}")
        answered = time.perf_counter()
        deadline = answered + 10
        while True:
            page = expect(client.get(f"/users/{author.id}/posts", params={"limit": 1}), 200)
            if page["items"] and page["items"][0]["id"] == post_id:
                break
            assert time.perf_counter() < deadline, f"post {i} invisible after 10 s"
        lags.append(time.perf_counter() - answered)
    p50, p99 = percentile(lags, 50), percentile(lags, 99)
    figures = {
        "writes": len(lags),
        "p50_ms": round(p50 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(max(lags) * 1000, 2),
    }
    record_property("consistency_window", figures)
    REPORT["consistency window (POST /posts answered -> visible without X-Min-Position)"] = figures
    print(
        f"\nconsistency window (POST /posts -> GET without X-Min-Position): {figures}",
        file=sys.stderr,
    )
    assert p99 < 2.0, figures
