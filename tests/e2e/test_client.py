"""social.client against a real server: a session reads its own writes without asking."""

from __future__ import annotations

import asyncio

import httpx

from social.client import SocialClient

from ._support import PASSWORD, Server, unique_email


def test_client_reads_its_own_writes(server: Server) -> None:
    async def scenario() -> None:
        async with SocialClient(server.url) as client:
            email = unique_email("client")
            created = await client.post("/users", {"email": email, "password": PASSWORD})
            assert created.status_code == 201
            user_id = created.json()["id"]
            assert client.position == int(created.headers["x-position"]) > 0
            await client.login(email, PASSWORD)
            for i in range(5):
                post = await client.post("/posts", {"content": f"post {i}"})
                assert post.status_code == 201
                # no X-Min-Position by hand: the client sends its own position
                profile = await client.get(f"/users/{user_id}")
                assert profile.status_code == 200
                assert profile.json()["post_count"] == i + 1
                page = await client.get(f"/users/{user_id}/posts", {"limit": 1})
                assert page.json()["items"][0]["id"] == post.json()["id"]

    asyncio.run(scenario())


def test_client_backs_off_then_gives_the_503_back(server: Server) -> None:
    async def scenario() -> None:
        calls: list[str] = []

        async def always_behind(request: httpx.Request) -> httpx.Response:
            calls.append(request.headers["x-min-position"])
            return httpx.Response(503, headers={"retry-after": "0"}, json={"error": "behind"})

        transport = httpx.MockTransport(always_behind)
        async with SocialClient(
            server.url, attempts=3, base_delay=0.001, transport=transport
        ) as client:
            client.position = 41
            response = await client.get("/users/x")
        assert response.status_code == 503
        assert calls == ["41", "41", "41"]

    asyncio.run(scenario())


class LosesTheFirstAnswer(httpx.AsyncBaseTransport):
    """Forwards to the real server, then drops the first write's answer (as a timeout
    after the server applied it would): the client must send it again, same key."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.keys: list[str] = []
        self.lost = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.real.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/posts":
            self.keys.append(request.headers["idempotency-key"])
            if not self.lost:
                self.lost = True
                await response.aread()
                raise httpx.ReadTimeout("answer lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.real.aclose()


def test_client_sends_a_lost_write_again_with_its_key(server: Server) -> None:
    async def scenario() -> None:
        transport = LosesTheFirstAnswer()
        async with SocialClient(server.url, base_delay=0.001, transport=transport) as client:
            email = unique_email("lost")
            user = await client.post("/users", {"email": email, "password": PASSWORD})
            await client.login(email, PASSWORD)
            post = await client.post("/posts", {"content": "once"})
            assert post.status_code == 201
            assert post.headers["idempotent-replayed"] == "true"  # applied the first time
            assert transport.keys[0] == transport.keys[1]
            page = await client.get(f"/users/{user.json()['id']}/posts")
            assert [p["content"] for p in page.json()["items"]] == ["once"]
            another = await client.post("/posts", {"content": "twice"})
            assert transport.keys[2] != transport.keys[0]  # one key per logical write
            assert "idempotent-replayed" not in another.headers

    asyncio.run(scenario())
