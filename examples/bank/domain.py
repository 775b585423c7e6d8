"""An account's events and rules. Plain Python: no I/O, no database, no clock.

Money is an ``int`` of cents: a float cannot hold 0.10 exactly, and a ledger must add up
to the cent.

A transfer moves money between two accounts, which are two streams, and an append is
atomic on one stream only. So a transfer is a process of three steps, each one atomic on
its own account (``app.py`` runs them):

1. the source sends it (``TransferSent``): the money leaves its balance, in flight;
2. the target receives it (``TransferReceived``), or refuses it (it is closed);
3. the source completes it (``TransferCompleted``), or takes the money back
   (``TransferReturned``): the compensating step.

Each step is idempotent, keyed by the transfer's id: running the process again (after a
crash between two steps, or a conflict) repeats no step's effect. Between steps the money
is in flight, counted in neither balance; an account cannot close while it has some.
"""

from __future__ import annotations

from dataclasses import dataclass

from cqrskit import Aggregate, Event

__all__ = [
    "ALL_EVENTS",
    "Account",
    "AccountClosed",
    "AccountNotOpen",
    "AccountOpened",
    "BankError",
    "CannotClose",
    "Deposited",
    "InsufficientFunds",
    "InvalidAmount",
    "TransferCompleted",
    "TransferReceived",
    "TransferReturned",
    "TransferSent",
    "Withdrawn",
]


# -- events: what happened to one account, in the past tense ---------------------------------
# They carry no account id: the stream they are in ("account-<id>") says whose they are.


@dataclass(frozen=True)
class AccountOpened(Event):
    owner: str


@dataclass(frozen=True)
class Deposited(Event):
    amount: int


@dataclass(frozen=True)
class Withdrawn(Event):
    amount: int


@dataclass(frozen=True)
class TransferSent(Event):
    transfer_id: str
    to_account: str
    amount: int


@dataclass(frozen=True)
class TransferReceived(Event):
    transfer_id: str
    from_account: str
    amount: int


@dataclass(frozen=True)
class TransferCompleted(Event):
    transfer_id: str


@dataclass(frozen=True)
class TransferReturned(Event):
    transfer_id: str
    amount: int
    reason: str


@dataclass(frozen=True)
class AccountClosed(Event):
    pass


ALL_EVENTS: tuple[type[Event], ...] = (
    AccountOpened,
    Deposited,
    Withdrawn,
    TransferSent,
    TransferReceived,
    TransferCompleted,
    TransferReturned,
    AccountClosed,
)


# -- errors: a rule said no; nothing was recorded ---------------------------------------------


class BankError(Exception):
    """A request the bank's rules refuse (the caller's to fix, not a fault)."""


class InvalidAmount(BankError):
    pass


class InsufficientFunds(BankError):
    def __init__(self, balance: int, amount: int) -> None:
        self.balance = balance
        self.amount = amount
        super().__init__(f"insufficient funds: balance {balance} cents, asked for {amount}")


class AccountNotOpen(BankError):
    pass


class CannotClose(BankError):
    pass


# -- the aggregate -----------------------------------------------------------------------------


class Account(Aggregate):
    stream_prefix = "account"  # explicit: renaming the class must not move its streams

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0
        self.closed = False
        self.in_flight: dict[str, int] = {}
        """Transfers this account sent that are neither completed nor returned: id -> amount."""
        self.transfer_ids: set[str] = set()
        """Every transfer this account sent or received: what makes each step idempotent."""

    @classmethod
    def open(cls, id: str, owner: str) -> Account:
        if not owner.strip():
            raise BankError("an account needs an owner")
        account = cls(id)
        account.record(AccountOpened(owner.strip()))
        return account

    def deposit(self, amount: int) -> None:
        self._check_open()
        _check_amount(amount)
        self.record(Deposited(amount))

    def withdraw(self, amount: int) -> None:
        self._check_open()
        _check_amount(amount)
        self._check_funds(amount)
        self.record(Withdrawn(amount))

    def close(self) -> None:
        self._check_open()
        if self.balance:
            raise CannotClose(f"the balance is {self.balance}: withdraw it first")
        if self.in_flight:
            raise CannotClose(f"{len(self.in_flight)} transfer(s) still in flight")
        self.record(AccountClosed())

    # -- the steps of a transfer (see the module docstring) --------------------------------------

    def send_transfer(self, transfer_id: str, to_account: str, amount: int) -> None:
        if transfer_id in self.transfer_ids:
            return  # sent already: this is the process running again
        self._check_open()
        _check_amount(amount)
        if to_account == self.id:
            raise BankError("a transfer goes to another account")
        self._check_funds(amount)
        self.record(TransferSent(transfer_id, to_account, amount))

    def receive_transfer(self, transfer_id: str, from_account: str, amount: int) -> None:
        # Idempotence before the rules: an account that received a transfer and closed
        # since must not refuse it when the process runs again (the source would take the
        # money back a second time).
        if transfer_id in self.transfer_ids:
            return
        self._check_open()
        self.record(TransferReceived(transfer_id, from_account, amount))

    def complete_transfer(self, transfer_id: str) -> None:
        if transfer_id in self.in_flight:
            self.record(TransferCompleted(transfer_id))

    def return_transfer(self, transfer_id: str, reason: str) -> None:
        if transfer_id in self.in_flight:
            self.record(TransferReturned(transfer_id, self.in_flight[transfer_id], reason))

    # -- state changes: only here, from events -------------------------------------------------

    def apply(self, event: Event) -> None:
        match event:
            case AccountOpened(owner=owner):
                self.owner = owner
            case Deposited(amount=amount):
                self.balance += amount
            case Withdrawn(amount=amount):
                self.balance -= amount
            case TransferSent(transfer_id=tid, amount=amount):
                self.balance -= amount
                self.in_flight[tid] = amount
                self.transfer_ids.add(tid)
            case TransferReceived(transfer_id=tid, amount=amount):
                self.balance += amount
                self.transfer_ids.add(tid)
            case TransferCompleted(transfer_id=tid):
                del self.in_flight[tid]
            case TransferReturned(transfer_id=tid, amount=amount):
                self.balance += amount
                del self.in_flight[tid]
            case AccountClosed():
                self.closed = True
            case _:
                super().apply(event)

    def _check_open(self) -> None:
        if not self.exists:
            raise AccountNotOpen(f"account {self.id} was never opened")
        if self.closed:
            raise AccountNotOpen(f"account {self.id} is closed")

    def _check_funds(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFunds(self.balance, amount)


def _check_amount(amount: int) -> None:
    if amount <= 0:
        raise InvalidAmount(f"an amount is a positive number of cents, not {amount}")
