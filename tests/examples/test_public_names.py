"""The examples use cqrskit's public API only, as an app written outside this repository
would: its names come from ``cqrskit``, ``cqrskit.testing`` or a backend package
``cqrskit.backends.<name>``, and each is in that module's ``__all__``. Nothing in
``examples/`` imports a private name (``_x``) or a private module (``a._b``) of anything.

Every import statement counts, wherever it is (in a function too), and so does a string
naming a cqrskit module (``importlib.import_module("cqrskit._x")``). Dunder names
(``__future__``, ``__main__``) are not private."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import cqrskit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BACKENDS = sorted(
    p.name
    for p in (Path(cqrskit.__file__).parent / "backends").iterdir()
    if (p / "__init__.py").exists() and not p.name.startswith("_")
)
PUBLIC = {"cqrskit", "cqrskit.testing", *(f"cqrskit.backends.{name}" for name in BACKENDS)}
MODULE_NAME = re.compile(r"cqrskit(\.\w+)+")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _exported(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


def _check_module(module: str) -> Iterator[str]:
    parts = module.split(".")
    if any(_private(part) for part in parts):
        yield f"private module {module}"
    elif parts[0] == "cqrskit" and module not in PUBLIC:
        yield f"internal module {module} (public: {', '.join(sorted(PUBLIC))})"


def violations(source: str) -> Iterator[str]:
    """What breaks the rules in one module's source, one message per offence."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # a name bound to a cqrskit module -> that module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from (f"line {node.lineno}: {v}" for v in _check_module(alias.name))
                if alias.name in PUBLIC:
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            where = f"line {node.lineno}"
            yield from (f"{where}: {v}" for v in _check_module(module))
            for alias in node.names:
                if _private(alias.name):
                    yield f"{where}: private name {alias.name} from {module or '.'}"
                elif module in PUBLIC and alias.name not in _exported(module):
                    yield f"{where}: {module}.{alias.name} is not in {module}.__all__"
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and MODULE_NAME.fullmatch(node.value)
        ):
            yield from (f"line {node.lineno}: {v}" for v in _check_module(node.value))
    for node in ast.walk(tree):  # ``cqrskit.anything``: in __all__ too
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            module = modules[node.value.id]
            if node.attr not in _exported(module) and f"{module}.{node.attr}" not in PUBLIC:
                yield f"line {node.lineno}: {module}.{node.attr} is not in {module}.__all__"


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.py"))


def test_there_are_examples_to_check() -> None:
    names = {p.relative_to(EXAMPLES).as_posix() for p in _example_files()}
    assert {"bank/domain.py", "bank/app.py", "bank/__main__.py"} <= names


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_an_example_imports_public_names_only(path: Path) -> None:
    found = list(violations(path.read_text()))
    assert not found, f"{path.relative_to(ROOT)}:\n" + "\n".join(found)


# -- the check itself catches what it must -----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from cqrskit._marks import command", "private module cqrskit._marks"),
        ("import cqrskit._marks", "private module cqrskit._marks"),
        ("from cqrskit.app import App", "internal module cqrskit.app"),
        ("from cqrskit.bus import CommandType", "internal module cqrskit.bus"),
        ("import cqrskit.backends.sqlite.store", "internal module cqrskit.backends.sqlite.store"),
        ("from cqrskit.backends import sqlite", "internal module cqrskit.backends "),
        ("from cqrskit.testing._compare import mismatch", "private module"),
        ("from cqrskit import read_mark", "cqrskit.read_mark is not in cqrskit.__all__"),
        ("from cqrskit.testing import Applier", "not in cqrskit.testing.__all__"),
        ("from cqrskit.backends.memory import Workers", "not in cqrskit.backends.memory.__all__"),
        ("from .domain import _check_amount", "private name _check_amount"),
        ("import cqrskit\ncqrskit.connect.open_url", "cqrskit.connect is not in"),
        ("import cqrskit as ck\nck._marks", "cqrskit._marks is not in"),
        ("def f():\n    from cqrskit.sql import SqlTx", "internal module cqrskit.sql"),
        ("import importlib\nimportlib.import_module('cqrskit._lineage')", "private module"),
    ],
)
def test_the_check_refuses(source: str, expected: str) -> None:
    assert any(expected in v for v in violations(source)), list(violations(source))


def test_the_check_accepts_public_names() -> None:
    source = (
        "from __future__ import annotations\n"
        "import cqrskit\n"
        "import cqrskit.testing\n"
        "from cqrskit import App, Command, command\n"
        "from cqrskit.testing import given\n"
        "from cqrskit.backends.sqlite import SqliteEventStore\n"
        "from .domain import Account\n"
        "cqrskit.App\n"
        "cqrskit.testing.given\n"
    )
    assert list(violations(source)) == []
