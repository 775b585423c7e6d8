"""Contract rows: POST /posts and GET /users/{id}/posts (newest first, cursor pagination)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e._support import (
    POST_KEYS,
    User,
    all_posts,
    at,
    bearer,
    create_post,
    describe,
    expect,
    expect_error,
    expect_not_5xx,
    get_user,
    position,
    register,
)


@pytest.fixture(scope="module")
def silent(client: httpx.Client) -> User:
    """A user whose every post attempt is rejected: its post_count must stay 0."""
    return register(client)


@pytest.fixture(scope="module")
def one_post(client: httpx.Client) -> User:
    user = register(client)
    create_post(client, user, "one")
    return user


def test_create_post_answers_201_with_id(client: httpx.Client) -> None:
    user = register(client)
    resp = client.post("/posts", json={"content": "hello world"}, headers=user.auth)
    body = expect(resp, 201)
    assert set(body) == {"id"}, describe(resp)
    assert isinstance(body["id"], str)
    assert body["id"]
    pos = position(resp)
    assert pos > user.position
    posts = all_posts(client, user.id, pos)
    assert len(posts) == 1
    assert set(posts[0]) == POST_KEYS
    assert posts[0]["id"] == body["id"]
    assert posts[0]["user_id"] == user.id
    assert posts[0]["content"] == "hello world"
    assert posts[0]["created_at"] not in (None, "")
    assert get_user(client, user.id, pos)["post_count"] == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("x", id="1-char"),
        pytest.param("a" * 5000, id="5000-ascii"),
        pytest.param("é" * 5000, id="5000-two-byte-chars"),
        pytest.param("日本語 🚀 ünïcödé\n\ttabs", id="unicode"),
    ],
)
def test_content_within_limits_is_kept_verbatim(client: httpx.Client, content: str) -> None:
    user = register(client)
    post_id, pos = create_post(client, user, content)
    (post,) = all_posts(client, user.id, pos)
    assert (post["id"], post["content"]) == (post_id, content)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"content": ""}, id="empty"),
        pytest.param({"content": "a" * 5001}, id="5001-chars"),
        pytest.param({"content": "é" * 5001}, id="5001-two-byte-chars"),
        pytest.param({}, id="missing"),
        pytest.param({"content": None}, id="null"),
        pytest.param({"content": 42}, id="int"),
        pytest.param({"content": ["a"]}, id="list"),
        pytest.param({"content": {"text": "a"}}, id="object"),
    ],
)
def test_invalid_post_is_422(client: httpx.Client, silent: User, body: dict[str, Any]) -> None:
    user = silent
    expect_error(client.post("/posts", json=body, headers=user.auth), 422)
    assert get_user(client, user.id, user.position)["post_count"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param(bearer("forged-token"), id="invalid-token"),
    ],
)
def test_post_without_valid_token_is_401(client: httpx.Client, headers: dict[str, str]) -> None:
    expect_error(client.post("/posts", json={"content": "hi"}, headers=headers), 401)


def test_posts_are_listed_newest_first(client: httpx.Client) -> None:
    user = register(client)
    created = [create_post(client, user, f"post {i}") for i in range(5)]
    resp = client.get(f"/users/{user.id}/posts", headers=at(created[-1][1]))
    body = expect(resp, 200)
    assert set(body) == {"items", "next"}, describe(resp)
    assert position(resp) >= created[-1][1]
    assert [p["id"] for p in body["items"]] == [pid for pid, _ in reversed(created)]
    assert body["next"] is None
    assert all(set(p) == POST_KEYS for p in body["items"])


def test_user_without_posts_has_an_empty_page(client: httpx.Client) -> None:
    user = register(client)
    resp = client.get(f"/users/{user.id}/posts", headers=at(user.position))
    assert expect(resp, 200) == {"items": [], "next": None}


def test_pagination_returns_every_post_exactly_once_in_order(client: httpx.Client) -> None:
    user = register(client)
    created = [create_post(client, user, f"p{i}") for i in range(23)]
    last = created[-1][1]
    expected = [pid for pid, _ in reversed(created)]
    for limit in (1, 5, 7, 23, 50):
        pages: list[list[str]] = []
        params: dict[str, str | int] = {"limit": limit}
        for _ in range(100):
            page = expect(
                client.get(f"/users/{user.id}/posts", params=params, headers=at(last)), 200
            )
            assert len(page["items"]) <= limit
            pages.append([p["id"] for p in page["items"]])
            if page["next"] is None:
                break
            assert isinstance(page["next"], str), describe_page(page)
            assert page["next"], describe_page(page)
            params = {"limit": limit, "before": page["next"]}
        flat = [pid for page_ids in pages for pid in page_ids]
        assert flat == expected, f"limit={limit}: pages {pages}"
        # Every page but the last is full (page size: the limit, or a server-side cap).
        assert len({len(p) for p in pages[:-1]}) <= 1, f"short page before the end: {pages}"
        assert all(pages[:-1]), f"empty page before the end: {pages}"


def describe_page(page: dict[str, Any]) -> str:
    return f"next={page['next']!r} items={[p['id'] for p in page['items']]}"


def test_pagination_while_posts_are_created(client: httpx.Client) -> None:
    """Posts created between page requests must not shift the cursor: every post that
    existed before the first page appears exactly once, and no post appears twice."""
    user = register(client)
    before = [create_post(client, user, f"old {i}") for i in range(20)]
    last = before[-1][1]
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 6}
    for i in range(100):
        page = expect(client.get(f"/users/{user.id}/posts", params=params, headers=at(last)), 200)
        seen.extend(p["id"] for p in page["items"])
        # New posts land between page requests, each one visible to the next read.
        _, last = create_post(client, user, f"new {i}a")
        _, last = create_post(client, user, f"new {i}b")
        if page["next"] is None:
            break
        params = {"limit": 6, "before": page["next"]}
    assert len(seen) == len(set(seen)), f"duplicates across pages: {seen}"
    assert seen == [pid for pid, _ in reversed(before)]


def test_posts_of_unknown_user_is_404(client: httpx.Client) -> None:
    expect_error(client.get("/users/no-such-user-0000/posts"), 404)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "abc"},
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": "1" + "0" * 30},
        {"limit": "1.5"},
        {"before": "not-a-cursor"},
        {"before": ""},
        {"before": "%%%"},
        {"before": "A" * 2000},
        {"before": "9" * 40},
        {"before": "-1"},
    ],
)
def test_bad_paging_parameters_are_not_a_server_error(
    client: httpx.Client, one_post: User, params: dict[str, str]
) -> None:
    user = one_post
    resp = client.get(f"/users/{user.id}/posts", params=params)
    expect_not_5xx(resp)
    if resp.status_code == 200:
        assert set(resp.json()) == {"items", "next"}
