"""Contract rows: POST /users, POST /sessions, GET /users/{id}, PATCH /users/{id}."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e._support import (
    CONFLICT_MESSAGE,
    PASSWORD,
    USER_KEYS,
    Server,
    User,
    at,
    bearer,
    describe,
    expect,
    expect_error,
    get_user,
    position,
    register,
    unique_email,
)


@pytest.fixture(scope="module")
def patch_target(client: httpx.Client) -> User:
    """A user the rejected PATCH cases share: a 401 or 422 leaves it unchanged."""
    return register(client, display_name="Unchanged")


def test_register_answers_201_with_id_and_version(client: httpx.Client) -> None:
    resp = client.post("/users", json={"email": unique_email(), "password": PASSWORD})
    body = expect(resp, 201)
    assert set(body) == {"id", "version"}, describe(resp)
    assert isinstance(body["id"], str)
    assert body["id"]
    assert isinstance(body["version"], int)
    assert not isinstance(body["version"], bool)
    position(resp)


def test_register_with_optional_fields_shows_them(client: httpx.Client) -> None:
    user = register(client, display_name="Zoë 🚀 Ünïcode", avatar_url="https://example.com/a.png")
    body = get_user(client, user.id, user.position)
    assert body["display_name"] == "Zoë 🚀 Ünïcode"
    assert body["avatar_url"] == "https://example.com/a.png"


def test_each_registration_gets_its_own_id(client: httpx.Client) -> None:
    ids = {register(client).id for _ in range(3)}
    assert len(ids) == 3


def test_duplicate_email_is_409_case_insensitively(client: httpx.Client) -> None:
    local = unique_email("dup").split("@")[0]
    expect(client.post("/users", json={"email": f"{local}@example.com", "password": PASSWORD}), 201)
    for variant in (f"{local}@example.com", f"{local.upper()}@EXAMPLE.COM", f"{local}@Example.Com"):
        resp = client.post("/users", json={"email": variant, "password": PASSWORD})
        expect_error(resp, 409)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "EMAIL", "password": "1234567"}, id="password-7-chars"),
        pytest.param({"email": "EMAIL", "password": ""}, id="password-empty"),
        pytest.param({"email": "EMAIL"}, id="password-missing"),
        pytest.param({"password": PASSWORD}, id="email-missing"),
        pytest.param({}, id="empty-object"),
        pytest.param({"email": "not-an-email", "password": PASSWORD}, id="email-no-at"),
        pytest.param({"email": "", "password": PASSWORD}, id="email-empty"),
        pytest.param({"email": "@example.com", "password": PASSWORD}, id="email-no-local"),
        pytest.param({"email": 12345, "password": PASSWORD}, id="email-int"),
        pytest.param({"email": "EMAIL", "password": 12345678}, id="password-int"),
        pytest.param({"email": None, "password": PASSWORD}, id="email-null"),
        pytest.param({"email": "EMAIL", "password": None}, id="password-null"),
        pytest.param({"email": ["a@b.c"], "password": PASSWORD}, id="email-list"),
        pytest.param({"email": "EMAIL", "password": {"x": 1}}, id="password-object"),
        pytest.param({"email": "EMAIL", "password": PASSWORD, "display_name": 5}, id="name-int"),
        pytest.param({"email": "EMAIL", "password": PASSWORD, "avatar_url": 5}, id="avatar-int"),
    ],
)
def test_invalid_registration_is_422(client: httpx.Client, body: dict[str, Any]) -> None:
    email = unique_email()
    payload = {k: (email if v == "EMAIL" else v) for k, v in body.items()}
    expect_error(client.post("/users", json=payload), 422)


def test_password_of_exactly_8_chars_is_accepted(client: httpx.Client) -> None:
    email = unique_email()
    expect(client.post("/users", json={"email": email, "password": "12345678"}), 201)
    login = expect(client.post("/sessions", json={"email": email, "password": "12345678"}), 200)
    assert isinstance(login["token"], str)


def test_login_answers_token_and_user_id(client: httpx.Client) -> None:
    email = unique_email()
    created = expect(client.post("/users", json={"email": email, "password": PASSWORD}), 201)
    resp = client.post("/sessions", json={"email": email, "password": PASSWORD})
    body = expect(resp, 200)
    assert set(body) == {"token", "user_id"}, describe(resp)
    assert body["user_id"] == created["id"]
    assert isinstance(body["token"], str)
    assert body["token"]


def test_login_with_other_case_email_is_the_same_user(client: httpx.Client) -> None:
    user = register(client)
    resp = client.post("/sessions", json={"email": user.email.upper(), "password": PASSWORD})
    assert expect(resp, 200)["user_id"] == user.id


def test_login_wrong_password_and_unknown_email_are_401(client: httpx.Client) -> None:
    user = register(client)
    wrong = client.post("/sessions", json={"email": user.email, "password": PASSWORD + "x"})
    expect_error(wrong, 401)
    unknown = client.post("/sessions", json={"email": unique_email(), "password": PASSWORD})
    expect_error(unknown, 401)


def test_get_user_has_exactly_the_read_model_keys(client: httpx.Client) -> None:
    email = unique_email("alice.smith")
    user = register(client, email=email)
    resp = client.get(f"/users/{user.id}", headers=at(user.position))
    body = expect(resp, 200)
    assert set(body) == USER_KEYS, describe(resp)
    assert position(resp) >= user.position
    assert body["id"] == user.id
    assert body["display_name"] == email.split("@")[0]
    assert body["avatar_url"] is None
    assert body["created_at"] not in (None, "")
    assert (body["post_count"], body["follower_count"], body["following_count"]) == (0, 0, 0)
    assert body["version"] == user.version


def test_get_user_shows_email_only_to_that_user(client: httpx.Client) -> None:
    user, other = register(client), register(client)
    own = get_user(client, user.id, user.position, token=user.token)
    assert set(own) == USER_KEYS | {"email"}
    assert own["email"].lower() == user.email.lower()
    assert set(get_user(client, user.id, user.position, token=other.token)) == USER_KEYS
    assert set(get_user(client, user.id, user.position)) == USER_KEYS


def test_get_unknown_user_is_404(client: httpx.Client) -> None:
    expect_error(client.get("/users/no-such-user-0000"), 404)
    expect_error(client.get("/users/00000000-0000-0000-0000-000000000000"), 404)


def test_responses_never_show_a_password(client: httpx.Client, server: Server) -> None:
    secret = "Secret-Marker-Pw-9f3e2"
    email = unique_email()
    created = client.post("/users", json={"email": email, "password": secret})
    login = client.post("/sessions", json={"email": email, "password": secret})
    uid = expect(created, 201)["id"]
    token = expect(login, 200)["token"]
    pos = position(created)
    shown = [
        created,
        login,
        client.get(f"/users/{uid}", headers={**at(pos), **bearer(token)}),
        client.get(f"/users/{uid}", headers=at(pos)),
        client.post("/sessions", json={"email": email, "password": "wrong-" + secret}),
    ]
    for resp in shown:
        assert secret not in resp.text, describe(resp)
        assert "password" not in resp.text.lower() or resp.status_code >= 400, describe(resp)
        assert "hash" not in resp.text.lower(), describe(resp)
    assert secret not in server.output(), "the password appears in the server's output"
    if server.storage.label == "sqlite":  # every file the service wrote, read models included
        data_dir = Path(server.storage.args[server.storage.args.index("--data-dir") + 1])
        for path in data_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"password stored in {path}"


def test_patch_changes_profile_and_version(client: httpx.Client) -> None:
    user = register(client)
    resp = client.patch(
        f"/users/{user.id}",
        json={"version": user.version, "display_name": "New Name", "avatar_url": "https://x/y"},
        headers=user.auth,
    )
    body = expect(resp, 200)
    assert set(body) == {"id", "version"}, describe(resp)
    assert body["id"] == user.id
    assert isinstance(body["version"], int)
    assert body["version"] > user.version
    shown = get_user(client, user.id, position(resp))
    assert shown["display_name"] == "New Name"
    assert shown["avatar_url"] == "https://x/y"
    assert shown["version"] == body["version"]


def test_patch_only_one_field_keeps_the_other(client: httpx.Client) -> None:
    user = register(client, display_name="Keep Me", avatar_url="https://a/b")
    resp = client.patch(
        f"/users/{user.id}",
        json={"version": user.version, "avatar_url": "https://c/d"},
        headers=user.auth,
    )
    expect(resp, 200)
    shown = get_user(client, user.id, position(resp))
    assert (shown["display_name"], shown["avatar_url"]) == ("Keep Me", "https://c/d")


def test_patch_with_stale_version_is_409_with_current_version(client: httpx.Client) -> None:
    user = register(client)
    url = f"/users/{user.id}"
    first_resp = client.patch(
        url, json={"version": user.version, "display_name": "A"}, headers=user.auth
    )
    first = expect(first_resp, 200)
    for version in (user.version, first["version"] + 5):
        resp = client.patch(url, json={"version": version, "display_name": "B"}, headers=user.auth)
        assert resp.status_code == 409, describe(resp)
        assert resp.json() == {"error": CONFLICT_MESSAGE, "current_version": first["version"]}
    shown = get_user(client, user.id, position(first_resp))
    assert (shown["display_name"], shown["version"]) == ("A", first["version"])


def test_patch_by_another_user_is_403(client: httpx.Client) -> None:
    user, other = register(client), register(client)
    resp = client.patch(
        f"/users/{user.id}",
        json={"version": user.version, "display_name": "hijack"},
        headers=other.auth,
    )
    expect_error(resp, 403)
    assert get_user(client, user.id, user.position)["display_name"] != "hijack"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"Authorization": "Bearer not-a-real-token"}, id="invalid-token"),
        pytest.param({"Authorization": "Bearer"}, id="empty-token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-scheme"),
        pytest.param({"Authorization": "garbage"}, id="no-scheme"),
    ],
)
def test_patch_without_valid_token_is_401(
    client: httpx.Client, patch_target: User, headers: dict[str, str]
) -> None:
    user = patch_target
    resp = client.patch(
        f"/users/{user.id}", json={"version": user.version, "display_name": "x"}, headers=headers
    )
    expect_error(resp, 401)
    assert get_user(client, user.id, user.position)["display_name"] == "Unchanged"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"display_name": "no version"}, id="version-missing"),
        pytest.param({"version": "one", "display_name": "x"}, id="version-string"),
        pytest.param({"version": None, "display_name": "x"}, id="version-null"),
        pytest.param({"version": [1], "display_name": "x"}, id="version-list"),
        pytest.param({"version": 1.5, "display_name": "x"}, id="version-float"),
        pytest.param({"version": "VERSION", "display_name": 42}, id="name-int"),
    ],
)
def test_invalid_patch_is_422(
    client: httpx.Client, patch_target: User, body: dict[str, Any]
) -> None:
    user = patch_target
    payload = {k: (user.version if v == "VERSION" else v) for k, v in body.items()}
    expect_error(client.patch(f"/users/{user.id}", json=payload, headers=user.auth), 422)
    shown = get_user(client, user.id, user.position)
    assert (shown["display_name"], shown["version"]) == ("Unchanged", user.version)
