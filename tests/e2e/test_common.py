"""Common rules of the contract: error bodies and statuses for bad input (never a 500), the
64 KiB body limit, X-Position on every write and read, X-Min-Position read-your-writes and
its 503 when the read side cannot catch up in time."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e._support import (
    PASSWORD,
    Server,
    User,
    all_posts,
    at,
    describe,
    expect,
    expect_error,
    expect_not_5xx,
    follow,
    get_user,
    position,
    register,
    unique_email,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def user(client: httpx.Client) -> User:
    return register(client)


def json_endpoints(user: User) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, headers) of every endpoint that takes a JSON body."""
    return [
        ("POST", "/users", {}),
        ("POST", "/sessions", {}),
        ("PATCH", f"/users/{user.id}", user.auth),
        ("POST", "/posts", user.auth),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"email": ', id="truncated"),
        pytest.param(b"{email: 1}", id="unquoted-key"),
        pytest.param(b"{'a': 1}", id="single-quotes"),
        pytest.param(b'{"a": 1,}', id="trailing-comma"),
        pytest.param(b"\xff\xfe\x00garbage", id="invalid-utf8"),
        pytest.param(b"not json at all", id="text"),
    ],
)
def test_malformed_json_is_400(client: httpx.Client, user: User, raw: bytes) -> None:
    for method, path, headers in json_endpoints(user):
        resp = client.request(method, path, content=raw, headers={**JSON, **headers})
        expect_error(resp, 400)


def test_random_bytes_are_never_a_server_error(client: httpx.Client, user: User) -> None:
    rng = random.Random(20260426)
    for _ in range(12):
        body = rng.randbytes(rng.randint(1, 3000))
        for method, path, headers in json_endpoints(user):
            resp = client.request(method, path, content=body, headers={**JSON, **headers})
            expect_error(resp, (400, 422))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'[{"email": "a@b.c"}]', id="array-of-object"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(b'"a string"', id="string"),
        pytest.param(b"true", id="bool"),
        pytest.param(b"", id="empty-body"),
    ],
)
def test_json_that_is_not_an_object_is_rejected(
    client: httpx.Client, user: User, raw: bytes
) -> None:
    for method, path, headers in json_endpoints(user):
        resp = client.request(method, path, content=raw, headers={**JSON, **headers})
        expect_error(resp, (400, 422))


def deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param('{"email": ' + deep(15000) + ', "password": "pw-12345678"}', id="deep"),
        pytest.param('{"email": "x@example.com", "password": NaN}', id="nan"),
        pytest.param('{"email": "x@example.com", "password": 1e999}', id="infinity"),
        pytest.param('{"email": "x@example.com", "password": ' + "9" * 5000 + "}", id="bigint"),
    ],
)
def test_hostile_registration_bodies_are_400_or_422(client: httpx.Client, payload: str) -> None:
    resp = client.post("/users", content=payload.encode(), headers=JSON)
    expect_error(resp, (400, 422))


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("\\ud800-{}@example.com", id="lone-surrogate"),
        pytest.param("a\\u0000b-{}@example.com", id="nul"),
        pytest.param("\\u00fc\\u00f1\\u00ee-{}@example.com", id="non-ascii"),
    ],
)
def test_odd_emails_are_never_a_server_error(client: httpx.Client, email: str) -> None:
    raw = '{"email": "' + email.format(random.randrange(10**9)) + '", "password": "pw-12345678"}'
    resp = client.post("/users", content=raw.encode(), headers=JSON)
    expect_not_5xx(resp)
    if resp.status_code == 201:
        expect_not_5xx(client.get(f"/users/{resp.json()['id']}", headers=at(position(resp))))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("lone surrogate \ud800 here", id="surrogate"),
        pytest.param("nul \x00 byte", id="nul"),
        pytest.param("\u202e\u200b\ufeff bidi and zero-width", id="format-chars"),
    ],
)
def test_hostile_post_content_is_never_a_server_error(client: httpx.Client, content: str) -> None:
    author = register(client)
    raw = ('{"content": ' + _json_string(content) + "}").encode()
    resp = client.post("/posts", content=raw, headers={**JSON, **author.auth})
    expect_not_5xx(resp)
    if resp.status_code == 201:
        for post in all_posts(client, author.id, position(resp)):
            assert isinstance(post["content"], str)


def _json_string(text: str) -> str:
    """JSON-encode keeping lone surrogates as escapes (json.dumps would, httpx cannot)."""
    out = []
    for ch in text:
        out.append(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\' else f"\\u{ord(ch):04x}")
    return '"' + "".join(out) + '"'


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(10**30, id="huge"),
        pytest.param(2**63, id="int64-overflow"),
        pytest.param(-1, id="negative"),
        pytest.param(-(2**70), id="huge-negative"),
    ],
)
def test_out_of_range_versions_are_409_or_422(
    client: httpx.Client, user: User, version: int
) -> None:
    owner = user
    resp = client.patch(
        f"/users/{owner.id}", json={"version": version, "display_name": "x"}, headers=owner.auth
    )
    expect_error(resp, (409, 422))


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("text/plain", b'{"content": "hi"}'),
        ("application/x-www-form-urlencoded", b"content=hi"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nhi"),
        ("application/xml", b"<content>hi</content>"),
    ],
)
def test_wrong_content_types_are_never_a_server_error(
    client: httpx.Client, user: User, content_type: str, raw: bytes
) -> None:
    for method, path, headers in json_endpoints(user):
        resp = client.request(
            method, path, content=raw, headers={**headers, "Content-Type": content_type}
        )
        expect_not_5xx(resp)


def test_bodies_over_64_kib_are_413(client: httpx.Client, user: User) -> None:
    big = "a" * (66 * 1024)
    bodies = {
        "/users": {"email": unique_email(), "password": PASSWORD, "display_name": big},
        "/sessions": {"email": unique_email(), "password": big},
        f"/users/{user.id}": {"version": user.version, "display_name": big},
        "/posts": {"content": big},
    }
    for method, path, headers in json_endpoints(user):
        resp = client.request(method, path, json=bodies[path], headers=headers)
        expect_error(resp, 413)


def test_chunked_body_over_64_kib_is_413(client: httpx.Client, user: User) -> None:
    """Without a Content-Length the limit must still hold while the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'"}'

    resp = client.post("/posts", content=chunks(), headers={**JSON, **user.auth})
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    expect_error(resp, 413)


def test_body_just_under_64_kib_is_not_413(client: httpx.Client, user: User) -> None:
    resp = client.post("/posts", json={"content": "a" * (63 * 1024)}, headers=user.auth)
    expect_error(resp, 422)  # too long for a post, but not too large for the server


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param("%00", id="nul"),
        pytest.param("a" * 5000, id="long"),
        pytest.param("1' OR '1'='1", id="sql-quote"),
        pytest.param("..%2F..%2Fetc%2Fpasswd", id="traversal"),
        pytest.param("日本語", id="unicode"),
        pytest.param("-1", id="negative"),
        pytest.param("9" * 40, id="huge-number"),
    ],
)
def test_odd_user_ids_are_404(client: httpx.Client, user: User, user_id: str) -> None:
    for suffix in ("", "/posts", "/followers", "/following"):
        expect_error(client.get(f"/users/{user_id}{suffix}"), 404)
    resp = client.put(f"/users/{user_id}/followers/me", headers=user.auth)
    expect_error(resp, 404)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="empty"),
        pytest.param({"email": "a@example.com"}, id="no-password"),
        pytest.param({"password": PASSWORD}, id="no-email"),
        pytest.param({"email": 123, "password": PASSWORD}, id="email-int"),
        pytest.param({"email": "a@example.com", "password": None}, id="password-null"),
    ],
)
def test_invalid_login_bodies_are_422(client: httpx.Client, body: dict[str, Any]) -> None:
    expect_error(client.post("/sessions", json=body), 422)


def test_unknown_route_is_a_json_404(client: httpx.Client) -> None:
    expect_error(client.get("/no/such/route"), 404)


def test_wrong_method_is_a_json_error(client: httpx.Client) -> None:
    resp = client.delete("/health")
    assert 400 <= resp.status_code < 500, describe(resp)
    expect_error(resp, resp.status_code)


def test_every_write_and_read_carries_x_position(client: httpx.Client) -> None:
    """Writes answer increasing positions; reads answer the position their read model has
    processed, at least the one they were asked to wait for."""
    alice = register(client)
    email = unique_email()
    created = client.post("/users", json={"email": email, "password": PASSWORD})
    expect(created, 201)
    bob = register(client)
    writes: list[httpx.Response] = [
        client.patch(
            f"/users/{alice.id}",
            json={"version": alice.version, "display_name": "A2"},
            headers=alice.auth,
        ),
        client.post("/posts", json={"content": "x"}, headers=alice.auth),
        client.put(f"/users/{alice.id}/followers/me", headers=bob.auth),
        client.delete(f"/users/{alice.id}/followers/me", headers=bob.auth),
        client.put(f"/users/{alice.id}/followers/me", headers=bob.auth),
    ]
    previous = position(created)
    for resp in writes:
        assert resp.status_code in (200, 201), describe(resp)
        pos = position(resp)
        assert pos > previous, f"positions must increase: {previous} then {describe(resp)}"
        previous = pos
    # A write that changes nothing still answers a position.
    position(client.put(f"/users/{alice.id}/followers/me", headers=bob.auth))
    position(client.delete(f"/users/{bob.id}/followers/me", headers=alice.auth))
    for path in (
        f"/users/{alice.id}",
        f"/users/{alice.id}/posts",
        f"/users/{alice.id}/followers",
        f"/users/{bob.id}/following",
    ):
        for headers in ({}, at(previous)):
            resp = client.get(path, headers=headers)
            expect(resp, 200)
            pos = position(resp)
            if headers:
                assert pos >= previous, describe(resp)


def test_read_your_writes_after_every_kind_of_write(client: httpx.Client) -> None:
    """Immediately after each write, a read with its position sees it: no sleeping."""
    for _ in range(3):
        email = unique_email()
        resp = client.post("/users", json={"email": email, "password": PASSWORD})
        uid = expect(resp, 201)["id"]
        assert get_user(client, uid, position(resp))["id"] == uid
        token = expect(client.post("/sessions", json={"email": email, "password": PASSWORD}), 200)
        author = User(uid, email, token["token"], 0, position(resp))
        version = get_user(client, uid, author.position)["version"]
        resp = client.patch(
            f"/users/{uid}",
            json={"version": version, "display_name": "RYW"},
            headers=author.auth,
        )
        assert get_user(client, uid, position(resp))["display_name"] == "RYW"
        resp = client.post("/posts", json={"content": "ryw"}, headers=author.auth)
        post_id = expect(resp, 201)["id"]
        assert get_user(client, uid, position(resp))["post_count"] == 1
        page = expect(client.get(f"/users/{uid}/posts", headers=at(position(resp))), 200)
        assert page["items"][0]["id"] == post_id
        fan = register(client)
        pos = follow(client, fan, uid)
        assert get_user(client, uid, pos)["follower_count"] == 1
        resp = client.delete(f"/users/{uid}/followers/me", headers=fan.auth)
        assert get_user(client, fan.id, position(resp))["following_count"] == 0


@pytest.mark.parametrize("value", ["abc", "", "1.5", "0x10", "1e3", "--1", "12abc"])
def test_bad_x_min_position_is_never_a_server_error(
    client: httpx.Client, user: User, value: str
) -> None:
    resp = client.get(f"/users/{user.id}", headers={"X-Min-Position": value})
    expect_not_5xx(resp)


def test_zero_or_negative_x_min_position_answers_at_once(client: httpx.Client, user: User) -> None:
    started = time.monotonic()
    resp = client.get(f"/users/{user.id}", headers={"X-Min-Position": "0"})
    expect(resp, 200)
    position(resp)
    expect_not_5xx(client.get(f"/users/{user.id}", headers={"X-Min-Position": "-1"}))
    assert time.monotonic() - started < 4.0  # well under the 5 s wait


@pytest.mark.slow
def test_x_min_position_in_the_future_is_503_with_retry_after(
    client: httpx.Client, server: Server, user: User
) -> None:
    """The read side cannot reach a position that will never be written: after the wait
    (5 s by default) the answer is 503 with Retry-After. Out-of-range values run alongside."""
    head = position(client.post("/posts", json={"content": "head"}, headers=user.auth))
    targets = {
        "future": str(head + 1_000_000),
        "beyond-int64": str(2**63 + 5),
        "huge": "9" * 40,
    }

    def ask(value: str) -> tuple[httpx.Response, float]:
        with server.client(timeout=30) as http:
            started = time.monotonic()
            resp = http.get(f"/users/{user.id}", headers={"X-Min-Position": value})
            return resp, time.monotonic() - started

    with ThreadPoolExecutor(len(targets)) as pool:
        results: dict[str, Any] = dict(zip(targets, pool.map(ask, targets.values()), strict=True))

    resp, elapsed = results["future"]
    expect_error(resp, 503)
    assert 4.0 <= elapsed <= 12.0, f"answered 503 after {elapsed:.1f} s, expected ~5 s"
    retry_after = resp.headers.get("Retry-After")
    assert retry_after is not None, describe(resp)
    assert retry_after.strip(), describe(resp)
    for name in ("beyond-int64", "huge"):
        resp, _ = results[name]
        expect_error(resp, (400, 422, 503))
        if resp.status_code == 503:
            assert resp.headers.get("Retry-After"), describe(resp)
