"""An app whose projection parks, run as a child process to be killed during operator
actions (``python _ops_child.py DATA_DIR``): it runs the projections until killed. Its
handler fails on amount 13 while ``DATA_DIR/broken`` exists (the bug; removing the file
is the fix). It prints ``started`` once the runner runs."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cqrskit import App, Event, Projection, RecordedEvent, SqlTx, handles

BROKEN = Path(sys.argv[1] if __name__ == "__main__" else ".") / "broken"
DELAY = float(os.environ.get("OPS_CHILD_DELAY", "0"))
"""Seconds each handler call sleeps (the environment's ``OPS_CHILD_DELAY``)."""


@dataclass(frozen=True)
class Deposited(Event):
    amount: int


class Accounts(Projection):
    """Balance and number of events applied per account: an event applied twice shows."""

    name = "accounts"
    tables = ("accounts",)
    on_failure = "park"
    marker: Path = BROKEN

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL,"
            " events BIGINT NOT NULL, last BIGINT NOT NULL)"
        )

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        if DELAY:  # a slow handler: a test kills the process in the middle of a retry
            time.sleep(DELAY)
        if event.amount == 13 and self.marker.exists():
            raise ValueError("cannot handle 13")
        row = tx.fetchone("SELECT last FROM accounts WHERE id = ?", (record.stream_id,))
        if row is not None and row[0] >= record.stream_version:
            raise AssertionError(f"{record.stream_id}: version {record.stream_version} again")
        tx.execute(
            "INSERT INTO accounts VALUES (?, ?, 1, ?) ON CONFLICT (id) DO UPDATE SET"
            " balance = accounts.balance + excluded.balance, events = accounts.events + 1,"
            " last = excluded.last",
            (record.stream_id, event.amount, record.stream_version),
        )


class Ledger(App):
    events = (Deposited,)
    projections = (Accounts(),)


ledger = Ledger("memory://")
"""For ``cqrskit --app tests.integration._ops_child:ledger --url ...``."""


async def main(directory: str) -> None:
    Accounts.marker = Path(directory) / "broken"
    async with Ledger(f"sqlite:///{directory}", batch_size=100):
        print("started", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
