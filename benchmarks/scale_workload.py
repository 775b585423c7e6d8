"""The scale benchmark's workload: accounts receive deposits; a read model keeps balances.

The log is written in **generations** of ``width`` accounts that each receive ``length``
deposits. One ``append_streams`` call appends one deposit to every account of the
current generation (``width`` events, one per stream, each expecting the version its
stream is at), so the events of one account lie ``width`` positions apart over the
generation's stretch of the log, as a long-lived aggregate's do among everyone else's,
rather than side by side (which would make loading a stream a read of adjacent rows).
Account ids are :func:`cqrskit.new_id` values, as the reference service's ids are.
"""

from __future__ import annotations

from dataclasses import dataclass

from cqrskit import (
    Aggregate,
    Codec,
    Event,
    Projection,
    RecordedEvent,
    SqlTx,
    StreamAppend,
    handles,
    new_id,
)

MEMO = "scale benchmark deposit, reference "
"""With its 10-digit number, a memo of 45 characters: a payload of about 80 bytes."""


@dataclass(frozen=True)
class Deposited(Event):
    amount: int
    memo: str


class Account(Aggregate):
    stream_prefix = "account"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.balance = 0

    def apply(self, event: Event) -> None:
        match event:
            case Deposited(amount=amount):
                self.balance += amount
            case _:
                super().apply(event)


def codec() -> Codec:
    return Codec([Deposited])


class Balances(Projection):
    """One row per account: how many deposits and their sum (an upsert per event)."""

    name = "scale_balances"
    tables = ("scale_balances",)
    pipelined = True  # the handler only writes: PostgreSQL may pipeline a batch

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS scale_balances ("
            " account_id TEXT PRIMARY KEY,"
            " deposits INTEGER NOT NULL,"
            " balance INTEGER NOT NULL)"
        )

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO scale_balances (account_id, deposits, balance) VALUES (?, 1, ?)"
            " ON CONFLICT (account_id) DO UPDATE SET"
            " deposits = scale_balances.deposits + 1,"
            " balance = scale_balances.balance + excluded.balance",
            (record.aggregate_id, event.amount),
        )


@dataclass(frozen=True, slots=True)
class Shape:
    width: int = 1000
    """Accounts per generation: also the events of one append_streams call."""
    length: int = 100
    """Deposits per account: the length of every complete stream."""

    @property
    def generation(self) -> int:
        return self.width * self.length


class LogWriter:
    """Makes the batches of the log, in order, from event 0 on (one instance per log)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.written = 0
        self._accounts: list[str] = []

    def batch(self, limit: int) -> list[StreamAppend]:
        """The next batch: one deposit for each account of the generation, at most
        ``limit`` events (a log whose size is no multiple of ``width`` ends short)."""
        width = self.shape.width
        if self.written % self.shape.generation == 0:  # a new generation of accounts
            self._accounts = [new_id() for _ in range(width)]
        step = (self.written % self.shape.generation) // width  # deposits so far, each
        start = self.written % width
        accounts = self._accounts[start : start + limit]
        batch = [
            StreamAppend(
                Account.stream_id(account),
                [Deposited(1 + (self.written + i) % 97, f"{MEMO}{self.written + i:010d}")],
                step,
            )
            for i, account in enumerate(accounts)
        ]
        self.written += len(batch)
        return batch
