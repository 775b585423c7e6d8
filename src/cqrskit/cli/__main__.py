"""``python -m cqrskit.cli``: the ``cqrskit`` command."""

from ._main import main

if __name__ == "__main__":
    main()
