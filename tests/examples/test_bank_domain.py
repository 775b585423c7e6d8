"""The bank's account, decision by decision: given its events, when it decides, then these
events (or this refusal). Pure and synchronous: no store, no database."""

from __future__ import annotations

import pytest

from cqrskit.testing import given
from examples.bank.domain import (
    Account,
    AccountClosed,
    AccountNotOpen,
    AccountOpened,
    BankError,
    CannotClose,
    Deposited,
    InsufficientFunds,
    InvalidAmount,
    TransferCompleted,
    TransferReceived,
    TransferReturned,
    TransferSent,
    Withdrawn,
)

OPENED = AccountOpened("Ada")


def test_an_account_is_opened_with_an_owner() -> None:
    account = given(Account).when(lambda _: Account.open("a", " Ada ")).then(OPENED)
    assert (account.id, account.owner, account.balance, account.version) == ("a", "Ada", 0, 1)
    given(Account).when(lambda _: Account.open("a", " ")).then_raises(BankError, match="owner")


def test_deposits_and_withdrawals_move_the_balance() -> None:
    account = (
        given(Account, OPENED, Deposited(10_00))
        .when(lambda a: a.withdraw(4_00))
        .when(lambda a: a.deposit(50))
        .then(Withdrawn(4_00), Deposited(50))
    )
    assert account.balance == 6_50


def test_a_withdrawal_never_takes_the_balance_below_zero() -> None:
    error = (
        given(Account, OPENED, Deposited(3_00))
        .when(lambda a: a.withdraw(3_01))
        .then_raises(InsufficientFunds, match="balance 300 cents, asked for 301")
    )
    assert (error.balance, error.amount) == (3_00, 3_01)
    given(Account, OPENED, Deposited(3_00)).when(lambda a: a.withdraw(3_00)).then(Withdrawn(3_00))


@pytest.mark.parametrize("amount", [0, -1])
def test_amounts_are_positive(amount: int) -> None:
    given(Account, OPENED).when(lambda a: a.deposit(amount)).then_raises(InvalidAmount)
    given(Account, OPENED, Deposited(5)).when(lambda a: a.withdraw(amount)).then_raises(
        InvalidAmount
    )


def test_only_an_empty_account_closes_and_a_closed_one_takes_nothing() -> None:
    given(Account, OPENED, Deposited(1)).when(lambda a: a.close()).then_raises(
        CannotClose, match="withdraw it first"
    )
    given(Account, OPENED, Deposited(1), Withdrawn(1)).when(lambda a: a.close()).then(
        AccountClosed()
    )
    closed = given(Account, OPENED, AccountClosed(), id="a")
    closed.when(lambda a: a.deposit(1)).then_raises(AccountNotOpen, match="account a is closed")
    given(Account, id="b").when(lambda a: a.deposit(1)).then_raises(
        AccountNotOpen, match="never opened"
    )


# -- the steps of a transfer -------------------------------------------------------------------


def test_sending_a_transfer_puts_the_money_in_flight_once() -> None:
    account = (
        given(Account, OPENED, Deposited(10_00), id="a")
        .when(lambda a: a.send_transfer("t1", "b", 4_00))
        .when(lambda a: a.send_transfer("t1", "b", 4_00))  # the process running again
        .then(TransferSent("t1", "b", 4_00))
    )
    assert (account.balance, account.in_flight) == (6_00, {"t1": 4_00})


def test_a_transfer_obeys_the_rules_of_a_withdrawal() -> None:
    funded = (OPENED, Deposited(1_00))
    given(Account, *funded).when(lambda a: a.send_transfer("t1", "b", 2_00)).then_raises(
        InsufficientFunds
    )
    given(Account, *funded, id="a").when(lambda a: a.send_transfer("t1", "a", 1)).then_raises(
        BankError, match="another account"
    )


def test_receiving_is_idempotent_even_after_the_target_closed() -> None:
    received = (OPENED, TransferReceived("t1", "a", 4_00))
    given(Account, *received).when(lambda a: a.receive_transfer("t1", "a", 4_00)).then_nothing()
    # Received, then withdrawn and closed: running the process again must not refuse it,
    # or the source would take the money back while the target spent it.
    later = (*received, Withdrawn(4_00), AccountClosed())
    given(Account, *later).when(lambda a: a.receive_transfer("t1", "a", 4_00)).then_nothing()
    given(Account, OPENED, AccountClosed()).when(
        lambda a: a.receive_transfer("t2", "a", 1)
    ).then_raises(AccountNotOpen)


def test_the_source_completes_a_transfer_or_takes_the_money_back_once() -> None:
    sent = (OPENED, Deposited(10_00), TransferSent("t1", "b", 4_00))
    given(Account, *sent).when(lambda a: a.complete_transfer("t1")).when(
        lambda a: a.complete_transfer("t1")
    ).then(TransferCompleted("t1"))
    account = (
        given(Account, *sent)
        .when(lambda a: a.return_transfer("t1", "closed"))
        .when(lambda a: a.return_transfer("t1", "closed"))
        .then(TransferReturned("t1", 4_00, "closed"))
    )
    assert (account.balance, account.in_flight) == (10_00, {})
    completed = (*sent, TransferCompleted("t1"))
    given(Account, *completed).when(lambda a: a.return_transfer("t1", "late")).then_nothing()


def test_an_account_with_money_in_flight_does_not_close() -> None:
    given(Account, OPENED, Deposited(1), TransferSent("t1", "b", 1)).when(
        lambda a: a.close()
    ).then_raises(CannotClose, match="in flight")
