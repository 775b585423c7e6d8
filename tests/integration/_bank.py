"""The bank the operations tests run (tests/integration/test_parking.py and test_ops_http.py):
deposits per account, a projection that parks what it cannot handle and one that stops."""

from __future__ import annotations

from dataclasses import dataclass

from cqrskit import App, Event, Projection, RecordedEvent, SqlTx, handles

POISON: set[int] = set()
"""Amounts the handlers fail on: the bug; clearing it is the fix."""


@dataclass(frozen=True)
class Deposited(Event):
    amount: int


class Balances(Projection):
    """Balance per account, and the amounts in the order they were applied."""

    name = "balances"
    tables = ("balances",)
    on_failure = "park"

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY,"
            " balance BIGINT NOT NULL, amounts TEXT NOT NULL)"
        )

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        if event.amount in POISON:
            raise ValueError(f"cannot handle {event.amount}")
        tx.execute(
            "INSERT INTO balances (account, balance, amounts) VALUES (?, ?, ?)"
            " ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance,"
            " amounts = balances.amounts || ',' || excluded.amounts",
            (record.stream_id, event.amount, str(event.amount)),
        )


class Totals(Balances):
    """The same, stopping at the first failure (the default policy)."""

    name = "totals"
    tables = ("totals",)
    on_failure = "stop"

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY, total BIGINT)")
        tx.execute("INSERT INTO totals VALUES (1, 0) ON CONFLICT (id) DO NOTHING")

    @handles(Deposited)
    def on_deposited(self, tx: SqlTx, event: Deposited, record: RecordedEvent) -> None:
        if event.amount in POISON:
            raise ValueError(f"cannot handle {event.amount}")
        tx.execute("UPDATE totals SET total = total + ? WHERE id = 1", (event.amount,))


class Bank(App):
    events = (Deposited,)
    projections = (Balances(), Totals())
