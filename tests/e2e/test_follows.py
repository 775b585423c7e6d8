"""Contract rows: PUT/DELETE /users/{id}/followers/me, GET /users/{id}/followers|following."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e._support import (
    User,
    at,
    bearer,
    describe,
    expect,
    expect_error,
    follow,
    get_user,
    position,
    register,
)


def counts(client: httpx.Client, user_id: str, pos: int) -> tuple[int, int]:
    body = get_user(client, user_id, pos)
    return body["follower_count"], body["following_count"]


@pytest.fixture(scope="module")
def bystander(client: httpx.Client) -> User:
    """A user the rejected follow cases share: they must leave its counts at 0."""
    return register(client)


def test_follow_answers_following_true_and_counts_once(client: httpx.Client) -> None:
    alice, bob = register(client, display_name="Alice"), register(client, display_name="Bob")
    pos = follow(client, bob, alice.id)
    assert counts(client, alice.id, pos) == (1, 0)
    assert counts(client, bob.id, pos) == (0, 1)
    # Following twice changes nothing.
    again = client.put(f"/users/{alice.id}/followers/me", headers=bob.auth)
    assert expect(again, 200) == {"following": True}
    pos = max(pos, position(again))
    assert counts(client, alice.id, pos) == (1, 0)
    assert counts(client, bob.id, pos) == (0, 1)


def test_unfollow_answers_following_false_and_is_idempotent(client: httpx.Client) -> None:
    alice, bob = register(client), register(client)
    pos = follow(client, bob, alice.id)
    for _ in range(2):
        resp = client.delete(f"/users/{alice.id}/followers/me", headers=bob.auth)
        assert expect(resp, 200) == {"following": False}, describe(resp)
        pos = max(pos, position(resp))
        assert counts(client, alice.id, pos) == (0, 0)
        assert counts(client, bob.id, pos) == (0, 0)
    # Never followed: still 200 and nothing changes.
    carol = register(client)
    resp = client.delete(f"/users/{alice.id}/followers/me", headers=carol.auth)
    assert expect(resp, 200) == {"following": False}
    assert counts(client, alice.id, max(pos, position(resp))) == (0, 0)


def test_follow_unfollow_follow_again(client: httpx.Client) -> None:
    alice, bob = register(client), register(client)
    follow(client, bob, alice.id)
    expect(client.delete(f"/users/{alice.id}/followers/me", headers=bob.auth), 200)
    pos = follow(client, bob, alice.id)
    assert counts(client, alice.id, pos) == (1, 0)
    assert counts(client, bob.id, pos) == (0, 1)


def test_followers_and_following_lists(client: httpx.Client) -> None:
    alice = register(client, display_name="Alice")
    fans = [register(client, display_name=f"Fan {i}") for i in range(3)]
    pos = max(follow(client, fan, alice.id) for fan in fans)
    resp = client.get(f"/users/{alice.id}/followers", headers=at(pos))
    body = expect(resp, 200)
    assert set(body) == {"items", "next"}, describe(resp)
    assert position(resp) >= pos
    assert body["next"] is None
    assert all(set(item) == {"id", "display_name"} for item in body["items"]), describe(resp)
    assert sorted((i["id"], i["display_name"]) for i in body["items"]) == sorted(
        (f.id, f"Fan {n}") for n, f in enumerate(fans)
    )
    for fan in fans:
        resp = client.get(f"/users/{fan.id}/following", headers=at(pos))
        body = expect(resp, 200)
        assert set(body) == {"items", "next"}, describe(resp)
        assert position(resp) >= pos
        assert body == {"items": [{"id": alice.id, "display_name": "Alice"}], "next": None}
    lonely = register(client)
    for rel in ("followers", "following"):
        resp = client.get(f"/users/{lonely.id}/{rel}", headers=at(lonely.position))
        assert expect(resp, 200) == {"items": [], "next": None}


def test_unfollow_removes_from_lists(client: httpx.Client) -> None:
    alice, bob = register(client), register(client)
    follow(client, bob, alice.id)
    resp = client.delete(f"/users/{alice.id}/followers/me", headers=bob.auth)
    pos = position(resp)
    assert expect(client.get(f"/users/{alice.id}/followers", headers=at(pos)), 200)["items"] == []
    assert expect(client.get(f"/users/{bob.id}/following", headers=at(pos)), 200)["items"] == []


def test_lists_show_the_current_display_name(client: httpx.Client) -> None:
    alice, bob = register(client), register(client, display_name="Before")
    follow(client, bob, alice.id)
    resp = client.patch(
        f"/users/{bob.id}",
        json={"version": bob.version, "display_name": "After"},
        headers=bob.auth,
    )
    expect(resp, 200)
    body = expect(client.get(f"/users/{alice.id}/followers", headers=at(position(resp))), 200)
    assert body["items"] == [{"id": bob.id, "display_name": "After"}]


def test_following_oneself_is_422(client: httpx.Client) -> None:
    alice = register(client)
    expect_error(client.put(f"/users/{alice.id}/followers/me", headers=alice.auth), 422)
    assert counts(client, alice.id, alice.position) == (0, 0)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_following_unknown_user_is_404(client: httpx.Client, bystander: User, method: str) -> None:
    resp = client.request(method, "/users/no-such-user-0000/followers/me", headers=bystander.auth)
    expect_error(resp, 404)
    assert counts(client, bystander.id, bystander.position) == (0, 0)


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize(
    "headers", [pytest.param({}, id="no-token"), pytest.param(bearer("nope"), id="bad-token")]
)
def test_follow_without_valid_token_is_401(
    client: httpx.Client, bystander: User, method: str, headers: dict[str, str]
) -> None:
    resp = client.request(method, f"/users/{bystander.id}/followers/me", headers=headers)
    expect_error(resp, 401)
    assert counts(client, bystander.id, bystander.position) == (0, 0)


@pytest.mark.parametrize("rel", ["followers", "following"])
def test_lists_of_unknown_user_are_404(client: httpx.Client, rel: str) -> None:
    expect_error(client.get(f"/users/no-such-user-0000/{rel}"), 404)
