"""The bank as a cqrskit application: commands, queries, read models, and ``Bank``.

``app`` below is the process's bank, opened on ``$BANK_URL`` (default ``memory://``) or
on whatever ``app.configure(url=...)`` says before it opens. Creating it opens nothing::

    from examples.bank.app import Deposit, GetAccount, OpenAccount, app

    async with app:
        opened = await app.dispatch(OpenAccount("Ada"))
        deposited = await app.dispatch(Deposit(opened.value, 10_00))
        account = await app.ask(GetAccount(opened.value), min_position=deposited.position)

Commands answer a value and a position; a query given that position as ``min_position``
waits until its read models have caught up with it, so a client reads its own writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from cqrskit import (
    App,
    Command,
    Projection,
    Query,
    RecordedEvent,
    Repository,
    Row,
    SqlTx,
    command,
    handles,
    new_id,
    query,
)

from .domain import (
    ALL_EVENTS,
    Account,
    AccountClosed,
    AccountOpened,
    BankError,
    Deposited,
    TransferCompleted,
    TransferReceived,
    TransferReturned,
    TransferSent,
    Withdrawn,
)

__all__ = [
    "AccountView",
    "Balances",
    "Bank",
    "CloseAccount",
    "Deposit",
    "GetAccount",
    "ListAccounts",
    "ListTransfers",
    "OpenAccount",
    "ResumeTransfers",
    "Transfer",
    "TransferOutcome",
    "TransferView",
    "Transfers",
    "Withdraw",
    "app",
]

TransferOutcome = Literal["completed", "returned"]


# -- commands: what a client asks for; each answers what its type parameter says -------------


@dataclass(frozen=True)
class OpenAccount(Command[str]):
    """Answers the new account's id."""

    owner: str


@dataclass(frozen=True)
class Deposit(Command[int]):
    """Answers the account's version after it."""

    account_id: str
    amount: int


@dataclass(frozen=True)
class Withdraw(Command[int]):
    """With ``expected_version`` (the version the client read), only if the account has
    not changed since: else :class:`~cqrskit.ConcurrencyError`, and the client reads again
    before deciding again. Answers the account's version after it."""

    account_id: str
    amount: int
    expected_version: int | None = None


@dataclass(frozen=True)
class CloseAccount(Command[int]):
    account_id: str
    expected_version: int | None = None


@dataclass(frozen=True)
class Transfer(Command[TransferOutcome]):
    """``transfer_id`` is the client's (``new_id()``): the same transfer sent twice (a
    retry after a timeout) moves the money once."""

    transfer_id: str
    from_account: str
    to_account: str
    amount: int


@dataclass(frozen=True)
class ResumeTransfers(Command[int]):
    """Finish the transfers a crash left in flight; answers how many were looked at."""


# -- queries and what they answer -------------------------------------------------------------


@dataclass(frozen=True)
class AccountView:
    id: str
    owner: str
    balance: int
    version: int
    """The account's version at this read: what ``expected_version`` takes."""
    closed: bool


@dataclass(frozen=True)
class TransferView:
    id: str
    from_account: str
    to_account: str
    amount: int
    state: str
    """``sent``, ``received``, then ``completed`` or ``returned``."""


@dataclass(frozen=True)
class GetAccount(Query[AccountView | None]):
    account_id: str


@dataclass(frozen=True)
class ListAccounts(Query[list[AccountView]]):
    pass


@dataclass(frozen=True)
class ListTransfers(Query[list[TransferView]]):
    in_flight_only: bool = False


# -- read models -------------------------------------------------------------------------------
# Portable SQL (SQLite and PostgreSQL): ? placeholders, BIGINT, TEXT, CREATE ... IF NOT EXISTS.


class Balances(Projection):
    """One row per account: its owner, balance and version."""

    name = "balances"
    tables = ("balances",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS balances (id TEXT PRIMARY KEY, owner TEXT NOT NULL,"
            " balance BIGINT NOT NULL, version BIGINT NOT NULL,"
            " closed INTEGER NOT NULL DEFAULT 0)"
        )

    @handles(AccountOpened)
    def on_opened(self, tx: SqlTx, event: AccountOpened, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO balances (id, owner, balance, version) VALUES (?, ?, 0, ?)",
            (record.aggregate_id, event.owner, record.stream_version),
        )

    @handles(Deposited, TransferReceived, TransferReturned)
    def on_credit(
        self,
        tx: SqlTx,
        event: Deposited | TransferReceived | TransferReturned,
        record: RecordedEvent,
    ) -> None:
        self._add(tx, record, event.amount)

    @handles(Withdrawn, TransferSent)
    def on_debit(self, tx: SqlTx, event: Withdrawn | TransferSent, record: RecordedEvent) -> None:
        self._add(tx, record, -event.amount)

    @handles(TransferCompleted)
    def on_completed(self, tx: SqlTx, event: TransferCompleted, record: RecordedEvent) -> None:
        self._add(tx, record, 0)  # the balance is as it was; the version moved

    @handles(AccountClosed)
    def on_closed(self, tx: SqlTx, event: AccountClosed, record: RecordedEvent) -> None:
        tx.execute(
            "UPDATE balances SET closed = 1, version = ? WHERE id = ?",
            (record.stream_version, record.aggregate_id),
        )

    @staticmethod
    def _add(tx: SqlTx, record: RecordedEvent, amount: int) -> None:
        # Every event of the account moves the version, so the version a client reads
        # here is one it can pass back as expected_version.
        tx.execute(
            "UPDATE balances SET balance = balance + ?, version = ? WHERE id = ?",
            (amount, record.stream_version, record.aggregate_id),
        )


class Transfers(Projection):
    """One row per transfer and where it stands: how the bank finds those in flight."""

    name = "transfers"
    tables = ("transfers",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS transfers (id TEXT PRIMARY KEY,"
            " from_account TEXT NOT NULL, to_account TEXT NOT NULL, amount BIGINT NOT NULL,"
            " state TEXT NOT NULL, position BIGINT NOT NULL)"
        )

    @handles(TransferSent)
    def on_sent(self, tx: SqlTx, event: TransferSent, record: RecordedEvent) -> None:
        tx.execute(
            "INSERT INTO transfers (id, from_account, to_account, amount, state, position)"
            " VALUES (?, ?, ?, ?, 'sent', ?)",
            (
                event.transfer_id,
                record.aggregate_id,
                event.to_account,
                event.amount,
                record.position,
            ),
        )

    @handles(TransferReceived)
    def on_received(self, tx: SqlTx, event: TransferReceived, record: RecordedEvent) -> None:
        tx.execute("UPDATE transfers SET state = 'received' WHERE id = ?", (event.transfer_id,))

    @handles(TransferCompleted)
    def on_completed(self, tx: SqlTx, event: TransferCompleted, record: RecordedEvent) -> None:
        tx.execute("UPDATE transfers SET state = 'completed' WHERE id = ?", (event.transfer_id,))

    @handles(TransferReturned)
    def on_returned(self, tx: SqlTx, event: TransferReturned, record: RecordedEvent) -> None:
        tx.execute("UPDATE transfers SET state = 'returned' WHERE id = ?", (event.transfer_id,))


def _account(row: Row) -> AccountView:
    id, owner, balance, version, closed = row
    return AccountView(str(id), str(owner), int(balance), int(version), bool(closed))


def _transfer(row: Row) -> TransferView:
    id, from_account, to_account, amount, state = row
    return TransferView(str(id), str(from_account), str(to_account), int(amount), str(state))


_ACCOUNT_COLUMNS = "id, owner, balance, version, closed"
_TRANSFER_COLUMNS = "id, from_account, to_account, amount, state"
_IN_FLIGHT = "state IN ('sent', 'received')"


# -- the application ---------------------------------------------------------------------------


class Bank(App):
    events = ALL_EVENTS
    projections = (Balances(), Transfers())

    @property
    def accounts(self) -> Repository[Account]:
        return self.repository(Account)

    async def _load(self, account_id: str, expected_version: int | None) -> Account:
        """The account (``StreamNotFound`` when it was never opened), at the version the
        client read if it gave one."""
        account = await self.accounts.get(account_id, expected_version=expected_version)
        # save() appends expecting the version loaded here, so a change between this load
        # and the append is a conflict too: the store checks it atomically.
        return account

    @command(OpenAccount)
    async def open_account(self, cmd: OpenAccount) -> str:
        account = Account.open(new_id(), cmd.owner)
        await self.accounts.save(account)
        return account.id

    # A deposit is right whatever happened to the account meanwhile: on a conflict the bus
    # runs it again from a fresh load. A withdrawal or a closure with the client's version
    # is not retried, since the conflict is the answer; without one, the caller retries.
    @command(Deposit, retry_on_conflict=True)
    async def deposit(self, cmd: Deposit) -> int:
        account = await self.accounts.get(cmd.account_id)
        account.deposit(cmd.amount)
        await self.accounts.save(account)
        return account.version

    @command(Withdraw)
    async def withdraw(self, cmd: Withdraw) -> int:
        account = await self._load(cmd.account_id, cmd.expected_version)
        account.withdraw(cmd.amount)
        await self.accounts.save(account)
        return account.version

    @command(CloseAccount)
    async def close_account(self, cmd: CloseAccount) -> int:
        account = await self._load(cmd.account_id, cmd.expected_version)
        account.close()
        await self.accounts.save(account)
        return account.version

    # -- transfers: a process over two streams (see domain.py's docstring) -------------------

    # Every step is idempotent, so running the whole handler again (a conflict on either
    # account, the client's retry with the same transfer id) repeats no effect.
    @command(Transfer, retry_on_conflict=True)
    async def transfer(self, cmd: Transfer) -> TransferOutcome:
        await self.accounts.get(cmd.to_account)  # no account by that id: refuse up front
        source = await self.accounts.get(cmd.from_account)
        source.send_transfer(cmd.transfer_id, cmd.to_account, cmd.amount)  # the rules, step 1
        await self.accounts.save(source)
        # From here a crash leaves the money in flight; ResumeTransfers finishes the job.
        return await self._settle(cmd.transfer_id, cmd.from_account, cmd.to_account, cmd.amount)

    async def _settle(
        self, transfer_id: str, from_account: str, to_account: str, amount: int
    ) -> TransferOutcome:
        """Steps 2 and 3 of a transfer whose step 1 is done."""
        target = await self.accounts.get(to_account)
        refused: BankError | None = None
        try:
            target.receive_transfer(transfer_id, from_account, amount)
        except BankError as error:  # closed since the transfer was sent
            refused = error
        else:
            await self.accounts.save(target)
        source = await self.accounts.get(from_account)
        if refused is None:
            source.complete_transfer(transfer_id)
        else:
            source.return_transfer(transfer_id, str(refused))  # the compensating step
        await self.accounts.save(source)
        return "completed" if refused is None else "returned"

    @command(ResumeTransfers, retry_on_conflict=True)
    async def resume_transfers(self, cmd: ResumeTransfers) -> int:
        # The read model is caught up with the log as it is now, so it lists every transfer
        # sent so far that was in flight. It may also list one that another process is
        # settling at this moment: settling is idempotent, so that costs a no-op, not money.
        await self.wait_for([Transfers.name], await self.store.head_position())
        rows = await self.db.read(
            lambda tx: tx.fetchall(
                f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE {_IN_FLIGHT} ORDER BY position"
            )
        )
        for t in map(_transfer, rows):
            await self._settle(t.id, t.from_account, t.to_account, t.amount)
        return len(rows)

    # -- queries: each reads its read models in one transaction ------------------------------

    @query(GetAccount, reads=[Balances])
    def get_account(self, q: GetAccount, tx: SqlTx) -> AccountView | None:
        row = tx.fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM balances WHERE id = ?", (q.account_id,))
        return None if row is None else _account(row)

    @query(ListAccounts, reads=[Balances])
    def list_accounts(self, q: ListAccounts, tx: SqlTx) -> list[AccountView]:
        rows = tx.fetchall(f"SELECT {_ACCOUNT_COLUMNS} FROM balances ORDER BY owner, id")
        return [_account(row) for row in rows]

    @query(ListTransfers, reads=[Transfers])
    def list_transfers(self, q: ListTransfers, tx: SqlTx) -> list[TransferView]:
        where = f"WHERE {_IN_FLIGHT}" if q.in_flight_only else ""
        rows = tx.fetchall(f"SELECT {_TRANSFER_COLUMNS} FROM transfers {where} ORDER BY position")
        return [_transfer(row) for row in rows]


app = Bank(os.environ.get("BANK_URL", "memory://"))
"""The process's bank. Nothing is opened until ``async with app`` (or ``await app.open()``)."""
