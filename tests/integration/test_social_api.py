"""The HTTP API in-process (httpx + ASGI) over real SQLite files: statuses, error bodies,
headers (X-Position, X-Min-Position, Retry-After) and the contract's edge cases."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

PASSWORD = "correct-horse-9"


def error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert isinstance(body.get("error"), str)
    assert body["error"]
    return body


def pos(resp: httpx.Response) -> int:
    return int(resp.headers["X-Position"])


async def signup(client: httpx.AsyncClient, email: str, **extra: Any) -> tuple[str, dict[str, str]]:
    resp = await client.post("/users", json={"email": email, "password": PASSWORD, **extra})
    assert resp.status_code == 201, resp.text
    login = await client.post("/sessions", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return resp.json()["id"], {"Authorization": f"Bearer {login.json()['token']}"}


def at(resp: httpx.Response) -> dict[str, str]:
    return {"X-Min-Position": resp.headers["X-Position"]}


# -- users and sessions --------------------------------------------------------------------------


async def test_register_answers_201_with_id_version_and_position(client: httpx.AsyncClient) -> None:
    resp = await client.post("/users", json={"email": "ann@example.com", "password": PASSWORD})
    assert resp.status_code == 201
    assert set(resp.json()) == {"id", "version"}
    assert resp.json()["version"] == 1
    assert pos(resp) == 1
    again = await client.post("/users", json={"email": "ANN@example.com", "password": PASSWORD})
    error(again, 409)


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ann@example.com"},
        {"email": "ann@example.com", "password": "short"},
        {"email": "ann@example.com", "password": 12345678},
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "ann@example.com", "password": PASSWORD, "display_name": "x" * 101},
        {"email": "ann@example.com", "password": PASSWORD, "avatar_url": "ftp://x.io/a"},
    ],
)
async def test_invalid_fields_are_422_with_details(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    details = error(await client.post("/users", json=body), 422)["details"]
    assert details
    assert all(set(d) >= {"field", "message"} for d in details)
    assert "short" not in str(details)  # a password is never echoed back


@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b'"text"', b"", b"null"])
async def test_malformed_or_non_object_bodies_are_400(
    client: httpx.AsyncClient, raw: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    error(await client.post("/users", content=raw, headers=headers), 400)


async def test_bodies_over_64_kib_are_413_whether_declared_or_streamed(
    client: httpx.AsyncClient,
) -> None:
    big = b'{"content": "' + b"x" * (64 * 1024) + b'"}'
    error(await client.post("/posts", content=big), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(20):
            yield b"x" * 4096

    error(await client.post("/users", content=chunks()), 413)


async def test_login_has_one_message_for_wrong_email_and_wrong_password(
    client: httpx.AsyncClient,
) -> None:
    await signup(client, "ann@example.com")
    wrong_pw = await client.post("/sessions", json={"email": "ann@example.com", "password": "x"})
    no_user = await client.post("/sessions", json={"email": "zed@example.com", "password": "x"})
    assert error(wrong_pw, 401) == error(no_user, 401)
    ok = await client.post("/sessions", json={"email": "ANN@example.com", "password": PASSWORD})
    assert set(ok.json()) == {"token", "user_id"}
    assert pos(ok) == 1


async def test_get_user_shows_the_email_only_to_that_user(client: httpx.AsyncClient) -> None:
    ann, ann_auth = await signup(client, "ann@example.com", display_name="Ann")
    bob, bob_auth = await signup(client, "bob@example.com")
    mine = await client.get(f"/users/{ann}", headers={**ann_auth, "X-Min-Position": "2"})
    assert mine.status_code == 200
    assert mine.json()["email"] == "ann@example.com"
    assert pos(mine) >= 2
    for headers in (bob_auth, {}, {"Authorization": "Bearer nonsense"}):
        theirs = await client.get(f"/users/{ann}", headers={**headers, "X-Min-Position": "2"})
        assert "email" not in theirs.json()
        assert theirs.json()["display_name"] == "Ann"
    bob_view = (await client.get(f"/users/{bob}", headers={"X-Min-Position": "2"})).json()
    assert bob_view == {
        "id": bob,
        "display_name": "bob",
        "avatar_url": None,
        "created_at": bob_view["created_at"],
        "post_count": 0,
        "follower_count": 0,
        "following_count": 0,
        "version": 1,
    }
    error(await client.get("/users/nobody"), 404)


async def test_min_position_waits_then_answers_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    ann, _ = await signup(client, "ann@example.com")
    late = await client.get(f"/users/{ann}", headers={"X-Min-Position": "1000"})
    error(late, 503)
    assert late.headers["Retry-After"] == "1"
    for bad in (b"-1", b"abc", b"1.5", "²".encode("latin-1")):
        error(await client.get(f"/users/{ann}", headers={b"X-Min-Position": bad}), 400)


# -- profile changes -----------------------------------------------------------------------------


async def test_patch_is_refused_without_a_valid_token_or_for_another_user(
    client: httpx.AsyncClient,
) -> None:
    ann, _ = await signup(client, "ann@example.com")
    _, bob_auth = await signup(client, "bob@example.com")
    change = {"version": 1, "display_name": "Mallory"}
    error(await client.patch(f"/users/{ann}", json=change), 401)
    bad = {"Authorization": "Bearer abc.def"}
    error(await client.patch(f"/users/{ann}", json=change, headers=bad), 401)
    error(await client.patch(f"/users/{ann}", json=change, headers=bob_auth), 403)


async def test_patch_checks_the_version_on_the_write_side(client: httpx.AsyncClient) -> None:
    ann, auth = await signup(client, "ann@example.com")
    ok = await client.patch(f"/users/{ann}", json={"version": 1, "avatar_url": None}, headers=auth)
    assert ok.json() == {"id": ann, "version": 2}
    assert pos(ok) == 2
    stale = await client.patch(f"/users/{ann}", json={"version": 1}, headers=auth)
    assert stale.status_code == 409
    assert stale.json() == {"error": "Conflict: resource has been modified", "current_version": 2}
    error(await client.patch(f"/users/{ann}", json={"version": "2"}, headers=auth), 422)


async def test_of_16_concurrent_patches_with_one_version_one_succeeds(
    client: httpx.AsyncClient,
) -> None:
    ann, auth = await signup(client, "ann@example.com")
    responses = await asyncio.gather(
        *(
            client.patch(
                f"/users/{ann}", json={"version": 1, "display_name": f"A{i}"}, headers=auth
            )
            for i in range(16)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 15


# -- posts and follows ---------------------------------------------------------------------------


async def test_posts_are_listed_newest_first_in_pages(client: httpx.AsyncClient) -> None:
    ann, auth = await signup(client, "ann@example.com")
    error(await client.post("/posts", json={"content": ""}, headers=auth), 422)
    error(await client.post("/posts", json={"content": "hi"}), 401)
    last = None
    for i in range(5):
        last = await client.post("/posts", json={"content": f"post {i}"}, headers=auth)
        assert last.status_code == 201
        assert set(last.json()) == {"id"}
    assert last is not None
    seen: list[str] = []
    url = f"/users/{ann}/posts?limit=2"
    while True:
        page = await client.get(url, headers=at(last))
        assert page.status_code == 200
        assert pos(page) >= pos(last)
        body = page.json()
        assert all(set(p) == {"id", "user_id", "content", "created_at"} for p in body["items"])
        seen.extend(p["content"] for p in body["items"])
        if body["next"] is None:
            break
        url = f"/users/{ann}/posts?limit=2&before={body['next']}"
    assert seen == [f"post {i}" for i in range(4, -1, -1)]
    for query in ("limit=0", "limit=101", "limit=x", "before=garbage"):
        error(await client.get(f"/users/{ann}/posts?{query}"), 422)
    error(await client.get("/users/nobody/posts"), 404)


async def test_follow_and_unfollow_are_idempotent(client: httpx.AsyncClient) -> None:
    ann, ann_auth = await signup(client, "ann@example.com", display_name="Ann")
    bob, bob_auth = await signup(client, "bob@example.com")
    for _ in range(2):
        resp = await client.put(f"/users/{ann}/followers/me", headers=bob_auth)
        assert resp.json() == {"following": True}
    followers = await client.get(f"/users/{ann}/followers", headers=at(resp))
    assert followers.json() == {"items": [{"id": bob, "display_name": "bob"}], "next": None}
    following = await client.get(f"/users/{bob}/following", headers=at(resp))
    assert following.json() == {"items": [{"id": ann, "display_name": "Ann"}], "next": None}
    shown = await client.get(f"/users/{ann}", headers=at(resp))
    assert shown.json()["follower_count"] == 1
    for _ in range(2):
        resp = await client.delete(f"/users/{ann}/followers/me", headers=bob_auth)
        assert resp.json() == {"following": False}
    shown = await client.get(f"/users/{ann}", headers=at(resp))
    assert shown.json()["follower_count"] == 0
    error(await client.put(f"/users/{ann}/followers/me", headers=ann_auth), 422)
    error(await client.put("/users/nobody/followers/me", headers=ann_auth), 404)
    error(await client.delete("/users/nobody/followers/me", headers=ann_auth), 404)
    error(await client.put(f"/users/{ann}/followers/me"), 401)
    error(await client.get("/users/nobody/followers"), 404)
    error(await client.get("/users/nobody/following"), 404)


# -- operations and the edges --------------------------------------------------------------------


async def test_health_projections_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    await signup(client, "ann@example.com")
    rows = (await client.get("/projections")).json()
    assert {r["name"] for r in rows} == {"user_profiles", "posts", "follows"}
    assert all(
        set(r)
        == {"name", "position", "head", "lag_events", "lag_seconds", "state", "error", "parked"}
        for r in rows
    )
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'social_commands_total{command="RegisterUser",outcome="ok"} 1.0' in metrics.text
    assert 'social_projection_head{projection="posts"} 1.0' in metrics.text
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/users/{user_id}/followers/me" in spec["paths"]


async def test_unknown_routes_and_methods_are_json_errors(client: httpx.AsyncClient) -> None:
    error(await client.get("/nowhere"), 404)
    error(await client.delete("/health"), 405)


async def test_a_real_bug_is_a_logged_json_500(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    assert error(await client.get("/boom"), 500) == {"error": "Internal server error"}
    assert "a bug" in caplog.text


async def test_passwords_and_hashes_appear_in_no_response_or_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann, auth = await signup(client, "ann@example.com")
    texts = []
    for resp in (
        await client.post("/users", json={"email": "ann@example.com", "password": PASSWORD}),
        await client.post("/users", json={"email": "b@example.com", "password": 123}),
        await client.post("/sessions", json={"email": "ann@example.com", "password": "nope"}),
        await client.get(f"/users/{ann}", headers={**auth, "X-Min-Position": "1"}),
    ):
        texts.append(resp.text)
    everything = "\n".join(texts) + caplog.text
    assert PASSWORD not in everything
    assert "scrypt$" not in everything


def test_every_route_the_service_serves_is_in_its_api_reference() -> None:
    """services/social/API.md is the reference the README points to: it names every route
    (its later sections also name routes of features still to come)."""
    import re
    from pathlib import Path

    from social.api import create_app
    from social.infrastructure.settings import Settings

    doc = (Path(__file__).resolve().parents[2] / "services/social/API.md").read_text()
    named = {
        (verb, re.sub(r"\{[^}]+\}", "{}", path.split("?")[0]))
        for verb, path in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)", doc)
    }
    spec = create_app(Settings()).openapi()
    served = {
        (verb.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, operations in spec["paths"].items()
        for verb in operations
    }
    assert served - named == set()
    assert len(served) >= 13
