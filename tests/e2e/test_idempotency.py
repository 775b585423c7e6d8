"""Contract, "Idempotent writes", against a real ``social serve`` (SQLite and PostgreSQL):
a repeat gets the first answer with ``Idempotent-Replayed: true`` (across a restart too),
another request with the key 422, a malformed key 400, sixteen at once execute once, a key
that failed with 4xx may be retried, keys are the caller's."""

from __future__ import annotations

import concurrent.futures
import uuid
from typing import Any

import httpx

from tests.e2e._support import (
    PASSWORD,
    ServerFactory,
    User,
    all_posts,
    expect,
    expect_error,
    login,
    position,
    register,
    unique_email,
)

REPLAYED = "Idempotent-Replayed"


def keyed(user: User | None = None, key: str | None = None) -> dict[str, str]:
    headers = {"Idempotency-Key": key or uuid.uuid4().hex}
    if user is not None:
        headers.update(user.auth)
    return headers


def test_a_repeat_gets_the_first_answer(client: httpx.Client) -> None:
    user = register(client)
    headers = keyed(user)
    first = client.post("/posts", json={"content": "once"}, headers=headers)
    again = client.post("/posts", json={"content": "once"}, headers=headers)
    assert expect(first, 201) == expect(again, 201)
    assert position(first) == position(again)
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    posts = all_posts(client, user.id, position(again))
    assert [p["content"] for p in posts] == ["once"]


def test_every_write_takes_a_key(client: httpx.Client) -> None:
    user, other = register(client), register(client)
    for method, path, body in (
        ("PATCH", f"/users/{user.id}", {"version": user.version, "display_name": "K"}),
        ("PUT", f"/users/{other.id}/followers/me", None),
        ("DELETE", f"/users/{other.id}/followers/me", None),
    ):
        headers = keyed(user)
        first = client.request(method, path, json=body, headers=headers)
        again = client.request(method, path, json=body, headers=headers)
        assert first.status_code == 200, first.text
        assert (again.status_code, again.json()) == (200, first.json())
        assert again.headers[REPLAYED] == "true"
    email = unique_email()
    headers = keyed()
    body: dict[str, Any] = {"email": email, "password": PASSWORD}
    first = client.post("/users", json=body, headers=headers)
    again = client.post("/users", json=body, headers=headers)
    assert (expect(first, 201), again.headers[REPLAYED]) == (expect(again, 201), "true")


def test_the_key_with_another_request_is_422(client: httpx.Client) -> None:
    user = register(client)
    headers = keyed(user)
    expect(client.post("/posts", json={"content": "a"}, headers=headers), 201)
    expect_error(client.post("/posts", json={"content": "b"}, headers=headers), 422)


def test_a_malformed_key_is_400(client: httpx.Client) -> None:
    user = register(client)
    for bad in (b"", b"x" * 256, "caf\u00e9".encode("latin-1"), b"a\tb"):
        headers: dict[str, str | bytes] = {**user.auth, "Idempotency-Key": bad}
        resp = client.post("/posts", json={"content": "a"}, headers=headers)
        expect_error(resp, 400)


def test_keys_are_the_caller_s(client: httpx.Client) -> None:
    alice, bob = register(client), register(client)
    key = uuid.uuid4().hex
    a = client.post("/posts", json={"content": "x"}, headers=keyed(alice, key))
    b = client.post("/posts", json={"content": "x"}, headers=keyed(bob, key))
    assert expect(a, 201)["id"] != expect(b, 201)["id"]
    # the same user's second session is the same caller
    again = client.post("/posts", json={"content": "x"}, headers=keyed(login(client, alice), key))
    assert (expect(again, 201), again.headers[REPLAYED]) == (expect(a, 201), "true")


def test_sixteen_at_once_execute_once(client: httpx.Client) -> None:
    user = register(client)
    headers = keyed(user)

    def post(_: int) -> httpx.Response:
        return client.post("/posts", json={"content": "together"}, headers=headers)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))
    ids = {expect(a, 201)["id"] for a in answers}
    assert len(ids) == 1
    assert sum(REPLAYED not in a.headers for a in answers) == 1
    last = max(position(a) for a in answers)
    assert len(all_posts(client, user.id, last)) == 1


def test_a_key_that_failed_with_4xx_may_be_retried(client: httpx.Client) -> None:
    taken = register(client)
    headers = keyed()
    body = {"email": taken.email, "password": PASSWORD}
    expect_error(client.post("/users", json=body, headers=headers), 409)
    again = client.post("/users", json=body, headers=headers)
    expect_error(again, 409)  # executed again (nothing was stored): the same refusal
    assert REPLAYED not in again.headers


def test_a_repeat_after_a_restart_gets_the_first_answer(server_factory: ServerFactory) -> None:
    server = server_factory()
    with server.client() as http:
        user = register(http)
        headers = keyed(user)
        first = http.post("/posts", json={"content": "durable"}, headers=headers)
        expect(first, 201)
    server.stop()
    restarted = server_factory(server.storage)
    with restarted.client() as http:
        headers = {**headers, **login(http, user).auth}
        again = http.post("/posts", json={"content": "durable"}, headers=headers)
        assert (expect(again, 201), again.headers[REPLAYED]) == (first.json(), "true")
        assert position(again) == position(first)
