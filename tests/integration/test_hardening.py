"""Hardening (issue 14, the "Hardening" lines of the contract): what an attacker, a typo or
a shared machine found, each checked here. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from cqrskit import Codec, EventStore
from cqrskit.backends.postgres import PostgresEventStore
from cqrskit.backends.sqlite import SqliteEventStore
from social import cli
from social.api import create_app
from social.application.tokens import InvalidToken, TokenService
from social.domain import ALL_EVENTS, ScryptParams
from social.infrastructure.bootstrap import SocialApp
from social.infrastructure.logs import OneLineFormatter
from social.infrastructure.settings import Settings
from social.infrastructure.write_model import KEY_VERSION, UsersTable, find_login
from tests.integration.test_social_api import PASSWORD, at, error, signup


def settings_in(data_dir: Path, *, secret: bytes | None = b"t" * 32) -> Settings:
    return Settings(
        data_dir=data_dir, secret=secret, scrypt=ScryptParams(n=2**10), min_position_timeout=0.3
    )


# -- X-Min-Position: a 400, never a 500 ---------------------------------------------------------


@pytest.mark.parametrize("value", ["9" * 20, "1" * 4301, "1" + "0" * 19])
async def test_an_over_long_min_position_is_400(client: httpx.AsyncClient, value: str) -> None:
    user_id, _ = await signup(client, "ann@example.com")
    resp = await client.get(f"/users/{user_id}", headers={"X-Min-Position": value})
    assert "19 digits" in error(resp, 400)["error"]


async def test_a_position_beyond_the_log_says_so(client: httpx.AsyncClient) -> None:
    """19 digits is a position; this one no write produced. The contract's answer for a
    position not reached in time stays (503 with Retry-After), and says why waiting
    cannot help."""
    user_id, _ = await signup(client, "ann@example.com")
    resp = await client.get(f"/users/{user_id}", headers={"X-Min-Position": "9" * 19})
    body = error(resp, 503)
    assert resp.headers["Retry-After"]
    assert "beyond the log" in body["error"]
    assert body["head"] == 1


async def test_a_position_the_log_has_is_a_plain_timeout(app: FastAPI) -> None:
    """Reached by the log but not by the read model in time: no "beyond the log"."""
    container = app.state.cqrskit
    await container.stop_projections()  # nothing applies the log any more
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://social") as client:
        user_id, _ = await signup(client, "ann@example.com")
        resp = await client.get(f"/users/{user_id}", headers={"X-Min-Position": "1"})
    body = error(resp, 503)
    assert "beyond" not in body["error"]
    assert "head" not in body


# -- tokens: only the exact form the server issued ---------------------------------------------


URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_a_token_is_accepted_only_in_the_form_it_was_issued() -> None:
    tokens = TokenService(b"k" * 32, clock=lambda: 1_000.0)
    token = tokens.issue("user-1")
    assert tokens.verify(token) == "user-1"
    body, signature = token.split(".")
    # A 32-byte signature is 43 characters: the last one carries 2 unused bits, which the
    # decoder ignores, so another last character spells the same bytes.
    last = URLSAFE.index(signature[-1])
    assert last % 4 == 0
    same_bytes = signature[:-1] + URLSAFE[last + 1]
    assert base64.urlsafe_b64decode(same_bytes + "=") == base64.urlsafe_b64decode(signature + "=")
    for form in [
        f"{token}=",
        f"{token}==",
        f"{body}=.{signature}",
        f"{body}.{same_bytes}",
        f"{body}.{signature}.",
        f" {token}",
    ]:
        with pytest.raises(InvalidToken):
            tokens.verify(form)


async def test_a_token_with_padding_appended_is_401(client: httpx.AsyncClient) -> None:
    _, auth = await signup(client, "ann@example.com")
    padded = {"Authorization": auth["Authorization"] + "=="}
    resp = await client.post("/posts", json={"content": "hi"}, headers=padded)
    error(resp, 401)
    assert (await client.post("/posts", json={"content": "hi"}, headers=auth)).status_code == 201


# -- headers on every response ------------------------------------------------------------------


async def test_every_response_says_nosniff_and_no_store(client: httpx.AsyncClient) -> None:
    created = await client.post("/users", json={"email": "ann@example.com", "password": PASSWORD})
    user_id = created.json()["id"]
    responses = [
        await client.get("/health"),
        await client.post("/sessions", json={"email": "ann@example.com", "password": PASSWORD}),
        await client.get(f"/users/{user_id}", headers=at(created)),
        await client.get("/users/nobody"),
        await client.post("/users", content=b"{not json"),
        await client.get("/no/such/route"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 400, 404]
    for resp in responses:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"


# -- files readable by the service's user only -------------------------------------------------


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


async def test_files_the_service_creates_are_readable_by_its_user_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = create_app(settings_in(data, secret=None))  # the key is made in the data dir
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://social") as client:
            await signup(client, "ann@example.com")
    created = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    assert {"write.db", "read.db", "secret.key", "read.db-leases"} <= set(created)
    assert [p for p in created if not private(data / p)] == []
    assert private(data)


def test_a_database_file_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    from cqrskit.backends.sqlite.connection import connect

    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)  # the operator's choice stands
    connect(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# -- read-only commands on a mistyped data directory -------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["rebuild"]])
def test_commands_on_a_missing_data_directory_refuse_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    typo = tmp_path / "dtaa"
    result = CliRunner().invoke(cli.app, [*command, "--data-dir", str(typo)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "no data directory at" in lines[0]
    assert "dtaa" in lines[0]
    assert not typo.exists()


# -- log lines a request cannot forge ----------------------------------------------------------


def test_a_log_message_is_one_line_whatever_it_carries() -> None:
    formatter = OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "social.api",
        logging.WARNING,
        __file__,
        1,
        "GET %s: slow",
        ("/x\nCRITICAL forged\r\x1b[2J\u2028",),
        None,
    )
    line = formatter.format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\u2028" not in line
    assert line == "WARNING GET /x\\nCRITICAL forged\\r\\x1b[2J\\u2028: slow"


def test_a_traceback_keeps_its_lines() -> None:
    formatter = OneLineFormatter("%(message)s")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert text.startswith("failed\nTraceback")
    assert text.rstrip().endswith("RuntimeError: boom")


# -- one account per address, however it is spelled -------------------------------------------

COMPOSED = "Jos\u00e9@example.com"
DECOMPOSED = "Jose\u0301@example.com"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (COMPOSED, DECOMPOSED),
        (DECOMPOSED, COMPOSED.upper()),
        ("stra\u00dfe@example.com", "STRASSE@example.com"),
    ],
)
async def test_an_address_spelled_otherwise_is_the_same_account(
    client: httpx.AsyncClient, first: str, second: str
) -> None:
    await signup(client, first)
    resp = await client.post("/users", json={"email": second, "password": PASSWORD})
    error(resp, 409)
    login = await client.post("/sessions", json={"email": second, "password": PASSWORD})
    assert login.status_code == 200, login.text


V1_USERS = (
    "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL,"
    " email_lower TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,"
    " created_at TEXT NOT NULL, position BIGINT NOT NULL)"
)
# Keys as version 1 made them (lower()): the first two are one address now, the third
# changes its key ("ß" folds to "ss"), the fourth keeps it.
V1_ROWS = [
    ("a", "\u00c9mile@x.io", "\u00e9mile@x.io", 1),
    ("b", "E\u0301mile@x.io", "e\u0301mile@x.io", 2),
    ("c", "Stra\u00dfe@x.io", "stra\u00dfe@x.io", 3),
    ("d", "plain@x.io", "plain@x.io", 4),
]


async def check_rekeyed(store: EventStore, caplog: pytest.LogCaptureFixture) -> None:
    logins = {
        spelling: await store.query(lambda tx, s=spelling: find_login(tx, s))
        for spelling in ["E\u0301MILE@x.io", "\u00e9mile@x.io", "STRASSE@x.io", "Plain@X.io"]
    }
    assert {k: v[0] if v else None for k, v in logins.items()} == {
        "E\u0301MILE@x.io": "a",  # the first registered keeps the address
        "\u00e9mile@x.io": "a",
        "STRASSE@x.io": "c",
        "Plain@X.io": "d",
    }
    rows = await store.query(lambda tx: tx.fetchall("SELECT id, email_lower FROM users"))
    assert dict(rows)["b"] == "#b"
    version = await store.query(lambda tx: tx.fetchone("SELECT key_version FROM users_schema"))
    assert version == (KEY_VERSION,)
    assert any("users a and b have one address" in r.getMessage() for r in caplog.records)


async def test_version_1_keys_are_recomputed_once_on_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "write.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(V1_USERS)
        conn.executemany("INSERT INTO users VALUES (?, ?, ?, 'hash', '2026-01-01', ?)", V1_ROWS)
        conn.commit()
    caplog.set_level(logging.WARNING, logger="social.write_model")
    store = await SqliteEventStore.open(path, Codec(ALL_EVENTS), inline=[UsersTable()])
    try:
        await check_rekeyed(store, caplog)
    finally:
        await store.close()
    caplog.clear()
    store = await SqliteEventStore.open(path, Codec(ALL_EVENTS), inline=[UsersTable()])
    await store.close()
    assert caplog.records == []  # once: the version says it is done


@pytest.mark.postgres
async def test_version_1_keys_are_recomputed_once_on_postgresql(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(V1_USERS)
        for row in V1_ROWS:
            conn.execute("INSERT INTO users VALUES (%s, %s, %s, 'hash', '2026-01-01', %s)", row)
    caplog.set_level(logging.WARNING, logger="social.write_model")
    store = await PostgresEventStore.open(pg_url, Codec(ALL_EVENTS), inline=[UsersTable()])
    try:
        await check_rekeyed(store, caplog)
    finally:
        await store.close()


# -- a valid token of a user that does not exist authenticates nobody -------------------------


async def test_a_token_of_a_user_that_does_not_exist_is_401_on_every_user_route(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    real, real_auth = await signup(client, "ann@example.com")
    ghost = {"Authorization": f"Bearer {app.state.cqrskit.tokens.issue('ghost')}"}
    attempts = [
        await client.post("/posts", json={"content": "boo"}, headers=ghost),
        await client.put(f"/users/{real}/followers/me", headers=ghost),
        await client.delete(f"/users/{real}/followers/me", headers=ghost),
        await client.patch("/users/ghost", json={"version": 1, "display_name": "G"}, headers=ghost),
        await client.patch(
            f"/users/{real}", json={"version": 1, "display_name": "G"}, headers=ghost
        ),
    ]
    for resp in attempts:
        error(resp, 401)
    post = await client.post("/posts", json={"content": "mine"}, headers=real_auth)
    assert post.status_code == 201  # the real token still works
    profile = await client.get(f"/users/{real}", headers=at(post) | real_auth)
    assert profile.json()["follower_count"] == 0
    followers = await client.get(f"/users/{real}/followers", headers=at(post))
    assert followers.json()["items"] == []


# -- password guessing is throttled per account -------------------------------------------------


async def test_repeated_failed_logins_are_throttled_then_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await signup(client, "ann@example.com")
    await signup(client, "bob@example.com")
    caplog.set_level(logging.WARNING, logger="social.auth")
    wrong = {"email": "ANN@example.com", "password": "not-the-one"}
    for _ in range(5):
        error(await client.post("/sessions", json=wrong), 401)
    right = {"email": "ann@example.com", "password": PASSWORD}
    refused = await client.post("/sessions", json=right)  # even the right password waits
    error(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    other = await client.post("/sessions", json={"email": "bob@example.com", "password": PASSWORD})
    assert other.status_code == 200  # another account is not affected
    lines = [r.getMessage() for r in caplog.records if r.name == "social.auth"]
    assert [line.split(" for account ")[0] for line in lines] == [
        f"failed login {n} in a row" for n in range(1, 6)
    ]
    assert len({line.split(" for account ")[1] for line in lines}) == 1  # one account's tag
    assert not any("ann" in line.lower() for line in lines)  # never the address
    await asyncio.sleep(int(refused.headers["Retry-After"]) + 0.1)
    assert (await client.post("/sessions", json=right)).status_code == 200


# -- one token key per deployment on PostgreSQL -------------------------------------------------


@pytest.mark.postgres
async def test_a_token_from_one_process_is_accepted_by_another_on_postgresql(
    pg_url_pair: tuple[str, str], tmp_path: Path
) -> None:
    write_url, read_url = pg_url_pair
    containers = []
    try:
        for workdir in ("api-1", "api-2"):  # two working directories, no SOCIAL_SECRET
            settings = Settings(
                data_dir=tmp_path / workdir,
                write_url=write_url,
                read_url=read_url,
                scrypt=ScryptParams(n=2**10),
            )
            container = SocialApp(settings, run_projections=False)
            await container.open()
            containers.append(container)
        first, second = containers
        assert second.tokens.verify(first.tokens.issue("user-1")) == "user-1"
        assert first.tokens.verify(second.tokens.issue("user-2")) == "user-2"
        assert not (tmp_path / "api-1").exists()  # no key file in a working directory
    finally:
        for container in containers:
            await container.close()


# -- /docs works offline ------------------------------------------------------------------------


async def test_the_docs_page_loads_everything_from_the_service(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert links, page.text
    assert [link for link in links if "//" in link] == []  # nothing from another host
    for link in links:
        asset = await client.get(link)
        assert asset.status_code == 200, link
        assert asset.content, link
    assert (await client.get("/redoc")).status_code == 404  # the CDN-loaded one is off
    assert (await client.get("/openapi.json")).status_code == 200


# -- operators get one line and an exit status that says what went wrong ----------------------


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("social")), "serve", "--port", str(port),
             "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert proc.returncode == cli.EXIT_CANNOT_LISTEN, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


# -- a body that does not arrive is the client's fault -----------------------------------------


async def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path: Path) -> None:
    settings = dataclasses.replace(settings_in(tmp_path), request_timeout=0.3)
    app = create_app(settings)
    sent: list[dict[str, Any]] = []

    async def never(_: object = None) -> dict[str, Any]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/users",
        "raw_path": b"/users",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"60")],
        "server": ("social", 80),
        "client": ("slow", 1),
    }
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app(scope, never, send), 10)
    assert sent[0]["status"] == 408
    assert b"did not arrive" in sent[1]["body"]


# -- a restored write.db, damaged files, a full disk -------------------------------------------


@contextlib.asynccontextmanager
async def serving(data: Path) -> Any:
    app = create_app(settings_in(data))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://social") as client:
            yield client


async def test_after_restoring_write_db_every_new_write_is_readable(tmp_path: Path) -> None:
    """The contract: write.db restored from a backup while read.db is kept."""
    async with serving(tmp_path) as client:
        for i in range(5):
            await signup(client, f"early{i}@example.com")
    with sqlite3.connect(tmp_path / "write.db") as src, sqlite3.connect(tmp_path / "b.db") as dst:
        src.backup(dst)
    src.close()
    dst.close()
    async with serving(tmp_path) as client:
        for i in range(20):
            await signup(client, f"late{i}@example.com")
    (tmp_path / "b.db").replace(tmp_path / "write.db")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"write.db{suffix}").unlink(missing_ok=True)
    # `social rebuild` on that state (in a copy): it used to give up after 1000 swaps.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("write.db", "read.db"):  # closed cleanly: no -wal left
        shutil.copy(tmp_path / name, copy / name)
    rebuilt = await asyncio.to_thread(
        CliRunner().invoke, cli.app, ["rebuild", "--data-dir", str(copy)]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.output.count("up to position 5 ") == 3, rebuilt.output
    async with serving(tmp_path) as client:
        created = await client.post(
            "/users", json={"email": "new@example.com", "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        found = await client.get(f"/users/{created.json()['id']}", headers=at(created))
        assert found.status_code == 200, found.text
        position = int(created.headers["X-Position"])
        for _ in range(100):  # the other read models follow on their own time
            states = (await client.get("/projections")).json()
            if all(p["position"] == position for p in states):
                break
            await asyncio.sleep(0.05)
        assert [(p["position"], p["lag_events"], p["state"]) for p in states] == [
            (position, 0, "running")
        ] * 3


def test_rebuild_and_serve_start_from_a_damaged_read_db(tmp_path: Path) -> None:
    asyncio.run(_signup_some(tmp_path))
    with (tmp_path / "read.db").open("r+b") as f:
        f.write(b"\x00" * 100)  # the header: not a database any more
    result = CliRunner().invoke(cli.app, ["rebuild", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.glob("read.db.damaged-*"))
    result = CliRunner().invoke(cli.app, ["status", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {row["position"] for row in json.loads(result.output)} == {3}


async def _signup_some(data: Path) -> None:
    async with serving(data) as client:
        for i in range(3):
            await signup(client, f"u{i}@example.com")


def test_serve_on_a_damaged_write_db_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "write.db").write_bytes(b"this is not a database" * 300)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("social")), "serve", "--port", "0",
         "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == cli.EXIT_DATABASE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {tmp_path / 'write.db'}: the database file is damaged")


def test_a_full_database_is_storage_full_naming_the_file(tmp_path: Path) -> None:
    from cqrskit import StorageFull
    from cqrskit.backends.sqlite.connection import convert_error

    path = tmp_path / "small.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("PRAGMA max_page_count = 4")  # as a full disk: SQLITE_FULL
    with pytest.raises(sqlite3.Error) as raised:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 2000,)] * 100)
    conn.close()
    converted = convert_error(raised.value, path)
    assert isinstance(converted, StorageFull)
    assert str(converted).startswith(f"{path}: ")


async def test_a_full_disk_is_507_not_database_unavailable(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cqrskit import StorageFull

    store = app.state.cqrskit.store

    async def full(*args: object, **kwargs: object) -> None:
        raise StorageFull("/data/write.db: database or disk is full")

    monkeypatch.setattr(store, "append", full)
    resp = await client.post("/users", json={"email": "ann@example.com", "password": PASSWORD})
    body = error(resp, 507)
    assert "disk is full" in body["error"]
    assert "/data" not in body["error"]  # the path is for the operator's log only


def test_postgresql_full_disk_and_corruption_have_their_own_errors() -> None:
    from cqrskit import DamagedDatabase, StorageFull
    from cqrskit.backends.postgres.connection import convert_error

    assert isinstance(convert_error(psycopg.errors.DiskFull("no space")), StorageFull)
    assert isinstance(convert_error(psycopg.errors.DataCorrupted("page")), DamagedDatabase)
    assert isinstance(convert_error(psycopg.errors.IndexCorrupted("index")), DamagedDatabase)
