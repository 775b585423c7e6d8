"""A small app for the idempotency tests: commands that append to one stream, to two, or
to none, and fail on demand; run as a child process it dispatches one command with a key
and is killed (SIGKILL, by itself) right after the command's commit, before answering.

``python _once_app.py URL KEY TITLE``
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from cqrskit import App, Command, Event, IdempotencyKey, command, new_id


@dataclass(frozen=True)
class Opened(Event):
    title: str


@dataclass(frozen=True)
class Receipt:
    id: str
    title: str


@dataclass(frozen=True)
class Open(Command[Receipt]):
    title: str


@dataclass(frozen=True)
class OpenTwo(Command[list[str]]):
    """Two streams in one command."""

    title: str
    fail_after: bool = False


@dataclass(frozen=True)
class Nothing(Command[str]):
    pass


@dataclass(frozen=True)
class OnlyOnce(Command[str]):
    """Succeeds the first time, fails after (as a PATCH whose version moved would)."""


class Accounts(App):
    events = (Opened,)
    runs: int = 0
    done_once: bool = False

    @command(Open)
    async def open_one(self, cmd: Open) -> Receipt:
        type(self).runs += 1
        if not cmd.title:
            raise ValueError("a title is needed")
        id = new_id()
        await self.append(f"account-{id}", [Opened(cmd.title)])
        return Receipt(id, cmd.title)

    @command(OpenTwo)
    async def open_two(self, cmd: OpenTwo) -> list[str]:
        ids = [new_id(), new_id()]
        for id in ids:
            await self.append(f"account-{id}", [Opened(cmd.title)])
        if cmd.fail_after:
            raise RuntimeError("failed after appending")
        return ids

    @command(Nothing)
    async def nothing(self, cmd: Nothing) -> str:
        return "nothing to do"

    @command(OnlyOnce)
    async def only_once(self, cmd: OnlyOnce) -> str:
        if type(self).done_once:
            raise RuntimeError("already done")
        type(self).done_once = True
        await self.append(f"account-{new_id()}", [Opened("once")])
        return "done"


async def _child(url: str, key: str, title: str) -> None:
    async with Accounts(url, run_projections=False) as app:
        store: Any = app.store
        append_streams = store.append_streams

        async def then_die(*args: Any, **kwargs: Any) -> Any:
            await append_streams(*args, **kwargs)
            print("committed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # committed, not answered

        store.append_streams = then_die
        await app.dispatch(Open(title), idempotency=IdempotencyKey(key, "fp-" + title))


if __name__ == "__main__":
    asyncio.run(_child(*sys.argv[1:4]))
