"""Contract, "Forgetting a user", against a real ``social serve`` (SQLite and PostgreSQL):
``DELETE /users/me`` answers as the contract says, the user is gone from every read and
list and from the others' counters, their tokens answer 401, their email registers again;
and what they gave (email, display name, avatar URL) is in none of the database files
(SQLite, read raw while the server runs) or dumps (PostgreSQL, ``pg_dump``), nor in the
server's output, before or after a rebuild."""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.e2e._support import (
    PASSWORD,
    Server,
    ServerFactory,
    User,
    at,
    describe,
    expect,
    expect_error,
    follow,
    get_user,
    position,
    register,
    run_cli,
)

SCAN_TIMEOUT = 10.0


def forget(client: httpx.Client, user: User, password: str = PASSWORD) -> httpx.Response:
    return client.request("DELETE", "/users/me", json={"password": password}, headers=user.auth)


def personal(tag: str) -> dict[str, str]:
    """A registration whose every personal value is unique to this test run."""
    mark = uuid.uuid4().hex[:12]
    return {
        "email": f"{tag}-{mark}@forget.example",
        "display_name": f"Name{tag}{mark}",
        "avatar_url": f"https://img.example/{tag}{mark}.png",
    }


def test_forget_answers_and_the_user_is_gone_everywhere(client: httpx.Client) -> None:
    ann = register(client, **{k: v for k, v in personal("ann").items() if k != "email"})
    bob, cid = register(client), register(client)
    follow(client, ann, bob.id)
    follow(client, cid, ann.id)
    last = follow(client, cid, bob.id)
    client.post("/posts", json={"content": "mine"}, headers=ann.auth)
    assert get_user(client, bob.id, last)["follower_count"] == 2

    expect_error(forget(client, ann, "not-my-password"), 401)
    expect_error(client.request("DELETE", "/users/me", json={"password": PASSWORD}), 401)
    expect_error(client.request("DELETE", "/users/me", headers=ann.auth), 400)  # no body
    expect_error(client.request("DELETE", "/users/me", json={}, headers=ann.auth), 422)
    done = forget(client, ann)
    assert expect(done, 200) == {"deleted": True}
    gone = position(done)

    for path in (f"/users/{ann.id}", f"/users/{ann.id}/posts",
                 f"/users/{ann.id}/followers", f"/users/{ann.id}/following"):  # fmt: skip
        expect_error(client.get(path, headers=at(gone)), 404)
    assert get_user(client, bob.id, gone)["follower_count"] == 1
    assert get_user(client, cid.id, gone)["following_count"] == 1
    for rel, uid in (("followers", bob.id), ("following", cid.id)):
        items = expect(client.get(f"/users/{uid}/{rel}", headers=at(gone)), 200)["items"]
        assert ann.id not in {item["id"] for item in items}, rel

    # Their tokens answer 401 on every write; their email logs in no more, registers again.
    for method, path, body in (
        ("POST", "/posts", {"content": "after"}),
        ("PUT", f"/users/{bob.id}/followers/me", None),
        ("PATCH", f"/users/{ann.id}", {"version": ann.version, "display_name": "x"}),
        ("DELETE", "/users/me", {"password": PASSWORD}),
    ):
        expect_error(client.request(method, path, json=body, headers=ann.auth), 401)
    expect_error(client.post("/sessions", json={"email": ann.email, "password": PASSWORD}), 401)
    again = register(client, ann.email)
    assert again.id != ann.id
    expect_error(client.put(f"/users/{ann.id}/followers/me", headers=bob.auth), 404)


def test_nothing_of_a_forgotten_user_is_left_in_storage(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    with server.client() as client:
        ann_data, bob_data = personal("ann"), personal("bob")
        ann = register(client, ann_data["email"], display_name=ann_data["display_name"],
                       avatar_url=ann_data["avatar_url"])  # fmt: skip
        bob = register(client, bob_data["email"], display_name=bob_data["display_name"])
        old_name = ann_data["display_name"]
        ann_data["display_name"] += "Later"  # the name before a change is theirs too
        changed = client.patch(
            f"/users/{ann.id}",
            json={"version": ann.version, "display_name": ann_data["display_name"]},
            headers=ann.auth,
        )
        expect(changed, 200)
        follow(client, bob, ann.id)
        key = subject_key(server, ann.id)
        gone = position(expect_ok(forget(client, ann)))
        expect_error(client.get(f"/users/{ann.id}", headers=at(gone)), 404)
        assert get_user(client, bob.id, gone)["display_name"] == bob_data["display_name"]
    secrets = [*ann_data.values(), old_name]
    found = wait_until_clean(server, secrets, tmp_path)
    assert found == {}, f"still readable: {found}"
    if key is not None:  # the destroyed key's bytes are in no file either
        assert [w for w, data in _storage_bytes(server, tmp_path) if key in data] == []
    assert_others_intact(server, bob_data, tmp_path)

    server.stop()
    output = server.output()
    assert [s for s in secrets if s in output] == [], "the server's output names the user"
    for name, secret in (("the user's key", key), ("the token secret", token_secret(server))):
        if secret is not None:  # what can be read back: SQLite's files
            shown = (secret.hex(), base64.b64encode(secret).decode(), secret.decode("latin-1"))
            assert not any(form in output for form in shown), f"{name} is in the output"

    rebuilt = run_cli(["rebuild", *server.storage.args], timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert scan(server, secrets, tmp_path) == {}
    again = server_factory(server.storage)
    with again.client() as client:
        expect_error(client.get(f"/users/{ann.id}"), 404)
        assert get_user(client, bob.id)["following_count"] == 0
    assert scan(again, secrets, tmp_path) == {}


def subject_key(server: Server, user_id: str) -> bytes | None:
    """The user's key as stored (SQLite; None on PostgreSQL, where the dump is the proof)."""
    directory = data_dir(server)
    if directory is None:
        return None
    with contextlib.closing(
        sqlite3.connect(f"file:{directory / 'write.db'}?mode=ro", uri=True)
    ) as db:
        row = db.execute("SELECT key FROM cqrskit_keys WHERE subject = ?", (user_id,)).fetchone()
    assert row is not None, "the user had no key before forgetting"
    assert row[0] is not None, "the user was forgotten already"
    return bytes(row[0])


def token_secret(server: Server) -> bytes | None:
    directory = data_dir(server)
    return None if directory is None else (directory / "secret.key").read_bytes().strip()


def data_dir(server: Server) -> Path | None:
    args = list(server.storage.args)
    return Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else None


def expect_ok(resp: httpx.Response) -> httpx.Response:
    assert resp.status_code == 200, describe(resp)
    return resp


def wait_until_clean(server: Server, secrets: list[str], tmp: Path) -> dict[str, list[str]]:
    """The read side drops the user as its projections apply the forget (then the WAL is
    truncated): poll the storage until nothing is found, or give the last findings."""
    deadline = time.monotonic() + SCAN_TIMEOUT
    while True:
        found = scan(server, secrets, tmp)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def assert_others_intact(server: Server, others: dict[str, str], tmp: Path) -> None:
    """The scan finds what is there: the other user's email is in clear in the write
    model's users table (their login), and their name in the read models."""
    found = scan(server, [others["email"], others["display_name"]], tmp)
    assert set(found) == {others["email"], others["display_name"]}, found


def scan(server: Server, secrets: list[str], tmp: Path) -> dict[str, list[str]]:
    """Where each secret is found: every file of a SQLite data directory, read raw (the
    databases, their -wal and -shm, the secret key), or a ``pg_dump`` of both PostgreSQL
    databases."""
    found: dict[str, list[str]] = {}
    for where, data in _storage_bytes(server, tmp):
        for secret in secrets:
            needle = secret.encode()
            if needle in data:
                found.setdefault(secret, []).append(where)
    return found


def _storage_bytes(server: Server, tmp: Path) -> list[tuple[str, bytes]]:
    directory = data_dir(server)
    if directory is not None:
        return [(str(p), p.read_bytes()) for p in sorted(directory.rglob("*")) if p.is_file()]
    args = list(server.storage.args)
    dumps = []
    for option in ("--write-url", "--read-url"):
        url = args[args.index(option) + 1]
        done = subprocess.run(
            ["pg_dump", "--no-owner", url], capture_output=True, check=False, timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        dumps.append((f"pg_dump {option}", done.stdout))
    return dumps


def test_every_process_refuses_the_tokens_at_once(server_factory: ServerFactory) -> None:
    """Two processes on the same storage: the forget answered by one, the other refuses the
    user's token on its very next write (the check reads the write model, not a cache)."""
    first = server_factory()
    second = server_factory(first.storage)
    with first.client() as one, second.client() as two:
        ann, bob = register(one), register(two)
        expect(two.post("/posts", json={"content": "before"}, headers=ann.auth), 201)
        expect_ok(forget(one, ann))
        expect_error(two.post("/posts", json={"content": "after"}, headers=ann.auth), 401)
        expect_error(two.put(f"/users/{ann.id}/followers/me", headers=bob.auth), 404)
