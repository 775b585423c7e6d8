"""Example applications built on cqrskit's public API only (``tests/examples`` checks it).

Run one from the repository's root: ``python -m examples.bank [URL]``.
"""
