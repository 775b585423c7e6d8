"""``python -m examples.bank [URL]``: a short demo of the bank on the database URL names.

::

    python -m examples.bank                          # memory://: gone when it ends
    python -m examples.bank sqlite:///bank-data      # ./bank-data/{write,read}.db: run it twice
    createdb bank && python -m examples.bank postgresql://postgres@127.0.0.1:5432/bank

Without a URL it uses ``$BANK_URL``, else ``memory://``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence

from cqrskit import ConcurrencyError, new_id

from .app import (
    Bank,
    Deposit,
    GetAccount,
    ListAccounts,
    OpenAccount,
    ResumeTransfers,
    Transfer,
    Withdraw,
    app,
)
from .domain import InsufficientFunds


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}" if cents >= 0 else f"-{money(-cents)}"


async def demo(bank: Bank, say: Callable[[str], object] = print) -> None:
    """Open two accounts, move money between them, and show the two refusals a client
    meets: a rule (insufficient funds) and a stale version (a conflict)."""
    resumed = await bank.dispatch(ResumeTransfers())  # what a crash may have left in flight
    say(f"transfers left in flight by an earlier run: {resumed.value}")

    ada = (await bank.dispatch(OpenAccount("Ada"))).value
    bob = (await bank.dispatch(OpenAccount("Bob"))).value
    await bank.dispatch(Deposit(ada, 100_00))
    sent = await bank.dispatch(Transfer(new_id(), ada, bob, 25_00))
    say(f"transfer of 25.00 from Ada to Bob: {sent.value}")

    # Read your writes: wait until the read model has the transfer, then read Ada's account.
    seen = (await bank.ask(GetAccount(ada), min_position=sent.position)).value
    assert seen is not None
    say(f"Ada has {money(seen.balance)} at version {seen.version}")

    # Withdraw "as of what I saw": fine now, a conflict once the account has moved on.
    withdrawn = await bank.dispatch(Withdraw(ada, 30_00, expected_version=seen.version))
    say(f"Ada withdrew 30.00; her account is at version {withdrawn.value}")
    try:
        await bank.dispatch(Withdraw(ada, 5_00, expected_version=seen.version))
    except ConcurrencyError as conflict:
        say(f"a second withdrawal from version {seen.version} is refused: {conflict}")
    try:
        await bank.dispatch(Withdraw(bob, 1_000_00))
    except InsufficientFunds as refused:
        say(f"Bob cannot withdraw 1000.00: {refused}")

    accounts = (await bank.ask(ListAccounts(), min_position=withdrawn.position)).value
    say(f"{len(accounts)} accounts in the bank:")
    for account in accounts:
        say(f"  {account.owner:<4} {money(account.balance):>8}  {account.id}")


async def run(bank: Bank) -> None:
    async with bank:
        await demo(bank)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    if args:
        app.configure(url=args[0])
    print(f"bank on {app.url}")
    asyncio.run(run(app))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
