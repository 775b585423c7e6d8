"""The test kit: given/when/then for aggregates, command handlers and projections.

::

    from cqrskit.testing import CommandScenario, ProjectionScenario, given

    # an aggregate: pure, synchronous
    given(Account, Deposited(10)).when(lambda a: a.withdraw(4)).then(Withdrawn(4))
    given(Account).when(lambda a: a.withdraw(4)).then_raises(InsufficientFunds)

    # command handlers, on an event store the test makes (in memory in unit tests)
    async with CommandScenario(MemoryEventStore(codec)) as scenario:
        handlers = AccountHandlers(scenario.store)
        await scenario.given("account-1", Deposited(10))
        outcome = await scenario.when(handlers.withdraw, Withdraw("1", 4))
        scenario.then(Withdrawn(4), stream="account-1")

    # a projection, on a read database the test makes (in memory in unit tests)
    async with ProjectionScenario(Balances(), codec, MemoryDatabase()) as scenario:
        await scenario.given(Deposited(10), stream="account-1")
        await scenario.then_rows("SELECT id, balance FROM balances", ("1", 10))

Every ``then`` raises :class:`AssertionError` with both sides listed and the first
difference named (fields included), so pytest shows it as any failed assertion; values a
test cannot know (ids, hashes, times) are written :data:`unittest.mock.ANY`.

The kit needs no backend of its own: the store and the read database are handed to it
(``cqrskit.backends.memory`` for unit tests; the same scenarios run on SQLite or
PostgreSQL). It needs no pytest either. See ``docs/testing.md``.
"""

from ._aggregate import AggregateScenario, given
from ._command import CommandScenario, Outcome
from ._projection import DEFAULT_STREAM, ProjectionScenario

__all__ = [
    "DEFAULT_STREAM",
    "AggregateScenario",
    "CommandScenario",
    "Outcome",
    "ProjectionScenario",
    "given",
]
