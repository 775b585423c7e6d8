"""A bank: accounts, deposits, withdrawals and transfers, as a cqrskit application.

- ``domain.py``: the account's events and rules, plain Python (no I/O, no framework but
  the ``Aggregate`` and ``Event`` base classes);
- ``app.py``: the commands, the queries, the read models and the :class:`Bank` app that
  ties them to a database given by URL;
- ``__main__.py``: ``python -m examples.bank [URL]`` runs a short demo on that database.

``docs/tutorial.md`` builds a smaller version of it step by step.
"""
