"""``cqrskit.fastapi.operations_router`` over HTTP (httpx against the ASGI app) on memory://
and SQLite: switched off without a token (404), 401 without the operator token (or with a
wrong one, a user's-looking one, or another scheme), each action's answer, the parked
events, the history, bad input as 4xx JSON, and the console's login and cookie."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cqrskit import ConfigurationError
from cqrskit._relays import write_report
from cqrskit.fastapi import connect, operations_router
from social.api import create_app
from social.domain import ScryptParams
from social.infrastructure.settings import Settings
from tests.integration._bank import POISON, Bank, Deposited

TOKEN = "operator-token-0123456789abcdef"


Client = httpx.AsyncClient
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'data'}"


@pytest.fixture
def serve(url: str) -> Callable[..., Any]:
    """``async with serve(**options) as (http, bank)``: the bank behind FastAPI, with the
    operator routes (``operations_router(bank, **options)``), opened by its lifespan."""

    @contextlib.asynccontextmanager
    async def run(**options: Any) -> AsyncIterator[tuple[Client, Bank]]:
        POISON.clear()
        run_projections = options.pop("run_projections", None)
        bank = Bank(url, min_position_timeout=10)
        api = FastAPI()
        connect(api, bank, run_projections=run_projections)
        api.include_router(operations_router(bank, **{"token": TOKEN, **options}))
        async with api.router.lifespan_context(api):
            transport = httpx.ASGITransport(api, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://bank") as http:
                yield http, bank
        POISON.clear()

    return run


@pytest.fixture
async def ops(serve: Callable[..., Any]) -> AsyncIterator[tuple[Client, Bank]]:
    async with serve() as opened:
        yield opened


def body(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


async def deposit(bank: Bank, account: str, *amounts: int) -> int:
    return (await bank.append(account, [Deposited(a) for a in amounts])).position


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def projection(http: Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = body(await http.get(f"/ops/projections/{name}", headers=BEARER), 200)
    return found


async def post(http: Client, path: str, json: Any = None, **headers: str) -> httpx.Response:
    return await http.post(f"/ops/projections/{path}", json=json, headers={**BEARER, **headers})


# -- who may ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/ops", "/ops/projections", "/ops/projections/balances/parked", "/ops/anything"]
)
async def test_without_a_token_every_route_answers_404(
    serve: Callable[..., Any], path: str
) -> None:
    async with serve(token=None) as (http, _):
        assert body(await http.get(path, headers=BEARER), 404) == {"error": "Not Found"}
        resp = await http.post("/ops/projections/balances/pause", headers=BEARER, json={})
        assert body(resp, 404) == {"error": "Not Found"}


def test_a_short_token_or_a_bad_prefix_is_refused() -> None:
    bank = Bank("memory://")
    with pytest.raises(ConfigurationError, match="at least 16"):
        operations_router(bank, token="short")
    with pytest.raises(ConfigurationError, match="prefix"):
        operations_router(bank, token=TOKEN, prefix="ops")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        # what a user of the app holds: a signed token, never the operator's
        "Bearer eyJ1c2VyIjoiYWxpY2UifQ.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        "Bearer \u00e9t\u00e9".encode(),  # not ASCII
    ],
)
async def test_without_the_operator_token_401(
    ops: tuple[Client, Bank], authorization: str | bytes | None
) -> None:
    http, bank = ops
    headers: list[tuple[bytes, bytes]] = []
    if authorization is not None:
        value = authorization if isinstance(authorization, bytes) else authorization.encode()
        headers.append((b"Authorization", value))
    for method, path in [
        ("GET", "/ops/projections"),
        ("GET", "/ops/projections/balances"),
        ("GET", "/ops/projections/balances/parked"),
        ("GET", "/ops/actions"),
        ("POST", "/ops/projections/balances/pause"),
        ("POST", "/ops/projections/balances/skip"),
    ]:
        resp = await http.request(method, path, headers=headers, json={"reason": "x"})
        assert resp.status_code == 401, (method, path, resp.text)
        assert set(resp.json()) == {"error"}
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert resp.headers["Cache-Control"] == "no-store"
    assert await bank.operations.history() == []  # nothing was asked


# -- views -----------------------------------------------------------------------------------


async def test_the_projections_with_their_figures(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    head = await deposit(bank, "acct-a", 1, 2)
    await bank.wait_for(["balances", "totals"], head)
    listed = body(await http.get("/ops/projections", headers=BEARER), 200)["projections"]
    assert [p["name"] for p in listed] == ["balances", "totals"]
    for row in listed:
        assert {
            "name", "position", "head", "lag_events", "lag_seconds", "state",
            "events_per_second", "error", "parked", "on_failure",
        } <= set(row)  # fmt: skip
        assert (row["position"], row["head"], row["lag_events"]) == (head, head, 0)
        assert row["state"] == "running"
        assert row["error"] is None
        assert row["parked"] == 0
    assert [p["on_failure"] for p in listed] == ["park", "stop"]
    assert (await projection(http, "totals"))["name"] == "totals"


async def test_parked_events_of_one_projection_and_one_stream(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    POISON.add(13)
    bad = await deposit(bank, "acct-a", 13)
    await deposit(bank, "acct-<b>", 13)
    await deposit(bank, "acct-a", 2)
    head = await deposit(bank, "acct-c", 5)
    await bank.wait_for(["balances"], head)

    row = await projection(http, "balances")
    assert (row["parked"], row["lag_events"], row["error"]) == (3, 0, None)
    parked = body(await http.get("/ops/projections/balances/parked", headers=BEARER), 200)
    assert parked["projection"] == "balances"
    events = parked["parked"]
    assert [(e["position"], e["stream_id"], e["behind"]) for e in events] == [
        (bad, "acct-a", None),
        (bad + 1, "acct-<b>", None),
        (bad + 2, "acct-a", bad),
    ]
    assert "cannot handle 13" in events[0]["error"]
    assert events[0]["event_type"] == "Deposited"
    assert events[0]["attempts"] >= 1
    one = await http.get(
        "/ops/projections/balances/parked",
        params={"stream_id": "acct-<b>", "limit": 5},
        headers=BEARER,
    )
    assert [e["position"] for e in body(one, 200)["parked"]] == [bad + 1]
    limited = await http.get("/ops/projections/balances/parked?limit=1", headers=BEARER)
    assert len(body(limited, 200)["parked"]) == 1
    # a projection that stops parks nothing
    stops = await http.get("/ops/projections/totals/parked", headers=BEARER)
    assert body(stops, 200)["parked"] == []


async def test_the_relays_as_they_reported_themselves(ops: tuple[Client, Bank]) -> None:
    """What relay processes wrote in the read database (tests/integration/relay runs real
    ones against NATS): none at first; then each with its lag against the log now."""
    http, bank = ops
    assert body(await http.get("/ops/relays", headers=BEARER), 200) == {"relays": []}
    assert (await http.get("/ops/relays")).status_code == 401
    head = await deposit(bank, "acct-a", 1, 2, 3)
    now = time.time()
    await bank.db.write(
        lambda tx: write_report(tx, "BANK", head - 2, "running", now, "w-1:7", stale_before=0)
    )
    (relay,) = body(await http.get("/ops/relays", headers=BEARER), 200)["relays"]
    assert relay.pop("lag_seconds") >= 0
    assert relay == {
        "stream": "BANK", "position": head - 2, "head": head, "lag_events": 2,
        "state": "running", "updated_at": now, "holder": "w-1:7",
    }  # fmt: skip


# -- actions ---------------------------------------------------------------------------------


async def test_pause_and_resume_answer_the_action_done(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    paused = body(await post(http, "balances/pause", {"reason": "migrating"}), 200)
    assert paused["action"] == "pause"
    assert paused["state"] == "done"
    assert paused["reason"] == "migrating"
    assert paused["requested_by"] == "http:127.0.0.1"
    assert paused["projection"] == "balances"
    assert (await projection(http, "balances"))["state"] == "paused"
    head = await deposit(bank, "acct-a", 1)

    async def lagging() -> bool:
        return bool((await projection(http, "balances"))["lag_events"] == 1)

    await eventually(lagging)
    resumed = await post(http, "balances/resume", None, **{"X-Operator": "alice"})
    assert body(resumed, 200)["requested_by"] == "alice (http:127.0.0.1)"
    await bank.wait_for(["balances"], head)
    assert (await projection(http, "balances"))["state"] == "running"

    history = body(await http.get("/ops/actions", headers=BEARER), 200)["actions"]
    assert [a["action"] for a in history] == ["resume", "pause"]
    only = await http.get("/ops/actions?projection=totals&limit=5", headers=BEARER)
    assert body(only, 200)["actions"] == []
    one = await http.get(f"/ops/actions/{paused['id']}", headers=BEARER)
    assert body(one, 200) == paused | {"finished_at": body(one, 200)["finished_at"]}


async def test_retry_fails_while_the_bug_is_there_then_applies(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    POISON.add(13)
    head = await deposit(bank, "acct-a", 13, 2)
    await bank.wait_for(["balances"], head)

    failed = body(await post(http, "balances/retry", {"stream_id": "acct-a"}), 409)
    assert failed["state"] == "failed"
    assert "failed again" in failed["error"]
    assert failed["error"] == failed["result"]
    assert failed["args"] == {"stream_id": "acct-a"}
    assert (await projection(http, "balances"))["parked"] == 2

    POISON.clear()  # the fix
    done = body(await post(http, "balances/retry", {"reason": "fixed"}), 200)
    assert done["result"] == "applied 2 events"
    assert (await projection(http, "balances"))["parked"] == 0
    rows = await bank.db.read(lambda tx: tx.fetchall("SELECT account, balance FROM balances"))
    assert rows == [("acct-a", 15)]


async def test_skip_needs_a_reason_and_skips_one_event(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    POISON.update({13, 14})
    first = await deposit(bank, "acct-a", 13)
    head = await deposit(bank, "acct-b", 14)
    await bank.wait_for(["balances"], head)

    for no_reason in (None, {}, {"reason": "  "}):
        assert "reason" in body(await post(http, "balances/skip", no_reason), 422)["error"]
    skipped = await post(http, "balances/skip", {"reason": "spam", "position": first})
    assert body(skipped, 200)["result"] == "skipped 1 event"
    events = await bank.operations.parked("balances")
    assert [e.position for e in events] == [head]
    by_stream = await post(http, "balances/skip", {"reason": "spam", "stream_id": "acct-b"})
    assert body(by_stream, 200)["result"] == "skipped 1 event"
    assert (await projection(http, "balances"))["parked"] == 0

    # a projection that stops has nothing to retry or skip
    refused = await post(http, "totals/skip", {"reason": "x"})
    assert "does not park" in body(refused, 422)["error"]
    assert "does not park" in body(await post(http, "totals/retry"), 422)["error"]


async def test_restart_after_the_fix(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    POISON.add(13)
    bad = await deposit(bank, "acct-a", 13)

    async def in_error() -> bool:
        return bool((await projection(http, "totals"))["state"] == "error")

    await eventually(in_error)
    error = (await projection(http, "totals"))["error"]
    assert (error["position"], error["event_type"]) == (bad, "Deposited")
    assert "cannot handle 13" in error["message"]

    POISON.clear()
    restarted = body(await post(http, "totals/restart", {"reason": "fixed"}), 200)
    assert restarted["result"].startswith("restarted")
    await bank.wait_for(["totals"], bad)
    assert (await projection(http, "totals"))["state"] == "running"


async def test_rewind_to_a_position_and_to_a_time(ops: tuple[Client, Bank]) -> None:
    http, bank = ops
    await deposit(bank, "acct-a", 1, 2)
    middle = await deposit(bank, "acct-a", 3)
    await asyncio.sleep(0.05)
    moment = time.time()
    await asyncio.sleep(0.05)
    head = await deposit(bank, "acct-a", 4)
    await bank.wait_for(["balances"], head)
    body(await post(http, "balances/pause"), 200)

    rewound = body(await post(http, "balances/rewind", {"to_position": 2}), 200)
    assert rewound["args"] == {"position": 2}
    assert (await projection(http, "balances"))["position"] == 2
    same = body(await post(http, "balances/rewind", {"position": 1}), 200)
    assert same["args"] == {"position": 1}
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f"{moment % 1:.6f}"[1:]
    for to_time in (moment, str(moment), f"{iso}Z", f"{iso}+00:00", iso):
        answer = body(await post(http, "balances/rewind", {"to_time": to_time}), 200)
        assert answer["args"] == {"position": middle}, to_time
    assert (await projection(http, "balances"))["position"] == middle


async def test_an_action_no_process_carries_out_is_202_pending(serve: Callable[..., Any]) -> None:
    async with serve(run_projections=False) as (http, _):
        resp = await post(http, "balances/pause?wait=0", {"reason": "later"})
        pending = body(resp, 202)
        assert pending["state"] == "pending"
        assert resp.headers["Location"] == f"/ops/actions/{pending['id']}"
        seen = await http.get(resp.headers["Location"], headers=BEARER)
        assert body(seen, 200)["state"] == "pending"


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "status", "says"),
    [
        ("nope/pause", {}, 404, "no projection 'nope'"),
        ("balances/explode", {}, 404, "no action 'explode'"),
        ("balances/pause", b"{not json", 400, "Malformed JSON"),
        ("balances/pause", [1, 2], 400, "JSON object"),
        ("balances/pause", "text", 400, "JSON object"),
        ("balances/pause", {"stream_id": "a"}, 422, "pause takes reason; not 'stream_id'"),
        ("balances/pause", {"reason": 5}, 422, "reason must be a string"),
        ("balances/pause", {"reason": "x" * 1001}, 422, "at most 1000"),
        ("balances/retry", {"stream_id": ["a"]}, 422, "stream_id must be a string"),
        ("balances/skip", {"reason": "r", "position": -1}, 422, "position must be a whole"),
        ("balances/skip", {"reason": "r", "position": 2**63}, 422, "position must be a whole"),
        ("balances/skip", {"reason": "r", "position": True}, 422, "position must be a whole"),
        ("balances/skip", {"reason": "r", "position": 1.5}, 422, "position must be a whole"),
        ("balances/skip", {"reason": "r", "position": "3"}, 422, "position must be a whole"),
        ("balances/rewind", {}, 422, "exactly one of to_position and to_time"),
        ("balances/rewind", {"to_position": 1, "to_time": 5}, 422, "exactly one"),
        ("balances/rewind", {"to_position": 1, "position": 1}, 422, "not both"),
        ("balances/rewind", {"to_time": "yesterday"}, 422, "to_time must be"),
        ("balances/rewind", {"to_time": "NaN"}, 422, "to_time must be"),
        ("balances/rewind", {"to_time": -5}, 422, "to_time must be"),
        ("balances/rewind", {"to_time": 1e300}, 422, "to_time must be"),
        ("balances/rewind", {"to_time": True}, 422, "to_time must be"),
        ("balances/pause?wait=-1", {}, 422, "wait must be a number"),
        ("balances/pause?wait=nan", {}, 422, "wait must be a number"),
        ("balances/pause?wait=1000", {}, 422, "wait must be a number"),
        ("balances/pause", b"{" + b" " * 20000 + b"}", 413, "over 16384 bytes"),
    ],
)
async def test_bad_input_is_a_4xx_json_error(
    ops: tuple[Client, Bank], path: str, payload: Any, status: int, says: str
) -> None:
    http, bank = ops
    if isinstance(payload, bytes):
        resp = await http.post(f"/ops/projections/{path}", content=payload, headers=BEARER)
    else:
        resp = await post(http, path, payload)
    assert says in body(resp, status)["error"]
    assert await bank.operations.history() == []


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/ops/projections/nope", "no projection 'nope'"),
        ("/ops/projections/nope/parked", "no projection 'nope'"),
        ("/ops/actions?projection=nope", "no projection 'nope'"),
        ("/ops/actions/no-such-action", "no action"),
        ("/ops/actions/%27%3B%20DROP", "no action"),
    ],
)
async def test_unknown_names_are_404(ops: tuple[Client, Bank], path: str, says: str) -> None:
    http, _ = ops
    assert says in body(await http.get(path, headers=BEARER), 404)["error"]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "limit=1.5", "limit=100000", "limit=" + "9" * 40]
)
async def test_bad_limits_are_422(ops: tuple[Client, Bank], query: str) -> None:
    http, _ = ops
    for path in ("/ops/projections/balances/parked", "/ops/actions"):
        assert (
            "limit must be" in body(await http.get(f"{path}?{query}", headers=BEARER), 422)["error"]
        )


async def test_a_bad_operator_name_is_400(ops: tuple[Client, Bank]) -> None:
    http, _ = ops
    resp = await post(http, "balances/pause", {}, **{"X-Operator": "x" * 65})
    assert "X-Operator" in body(resp, 400)["error"]


# -- the console: login, cookie, CSRF --------------------------------------------------------


async def test_the_page_without_a_session_is_the_login_form_only(
    ops: tuple[Client, Bank],
) -> None:
    http, bank = ops
    await deposit(bank, "acct-secret", 1)
    resp = await http.get("/ops")
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("text/html")
    assert 'action="/ops/login"' in resp.text
    assert "balances" not in resp.text
    assert "acct-secret" not in resp.text
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    # its style and the page's script are code, not data: served without a session
    assert (await http.get("/ops/console.css")).status_code == 200
    script = await http.get("/ops/console.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text


async def test_login_sets_a_strict_http_only_cookie_without_the_token(
    ops: tuple[Client, Bank],
) -> None:
    http, _ = ops
    wrong = await http.post("/ops/login", data={"token": "not-the-token-at-all"})
    assert wrong.status_code == 401
    assert "not the operator token" in wrong.text
    assert "set-cookie" not in wrong.headers
    assert (await http.get("/ops/projections")).status_code == 401

    fields = {f"f{i}": "x" for i in range(10)}
    assert (await http.post("/ops/login", data={"token": TOKEN, **fields})).status_code == 401
    too_big = await http.post("/ops/login", data={"token": TOKEN, "pad": "x" * 5000})
    assert body(too_big, 413)["error"] == "The body is over 4096 bytes"
    login = await http.post("/ops/login", data={"token": TOKEN})
    assert login.status_code == 303
    assert login.headers["Location"] == "/ops"
    cookie = login.headers["set-cookie"]
    assert re.match(r"cqrskit_ops=\d+\.[0-9a-f]{64};", cookie), cookie
    assert TOKEN not in cookie
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/ops" in lowered

    page = await http.get("/ops")
    assert page.status_code == 200
    assert 'data-base="/ops"' in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert body(await http.get("/ops/projections"), 200)["projections"]

    # a change with the cookie alone: refused (CSRF); with the header and JSON: done
    for headers in ({}, {"X-Ops-Console": "1"}, {"Content-Type": "application/json"}):
        resp = await http.post("/ops/projections/balances/pause", content=b"{}", headers=headers)
        assert resp.status_code == 403, (headers, resp.text)
        assert "X-Ops-Console" in resp.json()["error"]
    resp = await http.post(
        "/ops/projections/balances/pause",
        json={"reason": "from the page"},
        headers={"X-Ops-Console": "1", "X-Operator": "console"},
    )
    assert body(resp, 200)["requested_by"] == "console (http:127.0.0.1)"

    # a wrong bearer token is judged alone, whatever the cookie
    denied = await http.get("/ops/projections", headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401
    # a proxy's Basic credentials neither open nor close it: the cookie decides
    basic = {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}
    assert (await http.get("/ops/projections", headers=basic)).status_code == 200

    out = await http.post("/ops/logout")
    assert out.status_code == 303
    assert (await http.get("/ops/projections")).status_code == 401


@pytest.mark.parametrize(
    "forge",
    [
        lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"),  # tampered
        lambda v: str(int(v.split(".")[0]) + 10) + "." + v.split(".")[1],  # extended
        lambda v: TOKEN,
        lambda v: "",
        lambda v: "1." + "0" * 64,
        lambda v: "\u0661\u0662." + v.split(".")[1],
    ],
)
async def test_a_forged_cookie_is_refused(
    ops: tuple[Client, Bank], forge: Callable[[str], str]
) -> None:
    http, _ = ops
    login = await http.post("/ops/login", data={"token": TOKEN})
    value = login.cookies["cqrskit_ops"]
    http.cookies.clear()
    http.cookies.set("cqrskit_ops", forge(value), domain="bank", path="/ops")
    assert (await http.get("/ops/projections")).status_code == 401
    assert (await http.get("/ops")).status_code == 401


async def test_a_session_expires(serve: Callable[..., Any]) -> None:
    # 3 s: the expiry is rounded to whole seconds, and a loaded machine may take a second
    # between the login and the first look.
    async with serve(session=3.0) as (http, _):
        assert (await http.post("/ops/login", data={"token": TOKEN})).status_code == 303
        assert (await http.get("/ops/projections")).status_code == 200
        await asyncio.sleep(4.1)
        assert (await http.get("/ops/projections")).status_code == 401


# -- social ----------------------------------------------------------------------------------


@pytest.fixture
async def social_ops(tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(
        data_dir=tmp_path,
        secret=b"t" * 32,
        scrypt=ScryptParams(n=2**10),
        min_position_timeout=0.3,
        ops_token=TOKEN,
    )
    api = create_app(settings)
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(api, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://social") as http:
            yield http


async def test_social_without_social_ops_token_has_no_ops(client: Client) -> None:
    for path in ("/ops", "/ops/projections", "/ops/actions"):
        assert body(await client.get(path, headers=BEARER), 404) == {"error": "Not Found"}
    resp = await client.post("/ops/projections/users/pause", headers=BEARER, json={})
    assert body(resp, 404) == {"error": "Not Found"}


async def test_social_ops_opens_with_the_operator_token_only(social_ops: Client) -> None:
    http = social_ops
    signed_up = await http.post(
        "/users", json={"email": "op@example.com", "password": "pw-12345678"}
    )
    assert signed_up.status_code == 201, signed_up.text
    login = await http.post(
        "/sessions", json={"email": "op@example.com", "password": "pw-12345678"}
    )
    user = {"Authorization": f"Bearer {body(login, 200)['token']}"}
    assert (await http.get("/ops/projections", headers=user)).status_code == 401
    assert (await http.post("/ops/projections/users/pause", headers=user)).status_code == 401

    listed = body(await http.get("/ops/projections", headers=BEARER), 200)["projections"]
    names = [p["name"] for p in listed]
    assert names
    assert all("parked" in p and "error" in p for p in listed)
    paused = body(await post(http, f"{names[0]}/pause", {"reason": "test"}), 200)
    assert paused["state"] == "done"
    assert body(await post(http, f"{names[0]}/resume"), 200)["state"] == "done"
    # the service's own routes answer as before, with its headers on /ops too
    assert (await http.get("/health")).status_code == 200
    page = await http.get("/ops")
    assert page.status_code == 401
    assert page.headers["X-Content-Type-Options"].startswith("nosniff")


def test_social_ops_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCIAL_OPS_TOKEN", raising=False)
    assert Settings.from_env().ops_token is None
    monkeypatch.setenv("SOCIAL_OPS_TOKEN", "  ")
    assert Settings.from_env().ops_token is None
    monkeypatch.setenv("SOCIAL_OPS_TOKEN", TOKEN)
    assert Settings.from_env().ops_token == TOKEN
    monkeypatch.setenv("SOCIAL_OPS_TOKEN", "too-short")
    with pytest.raises(ConfigurationError, match="SOCIAL_OPS_TOKEN"):
        Settings.from_env()
