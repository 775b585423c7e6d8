"""docs/tutorial.md runs as written: its ```python tutorial blocks, in order, in one module's
namespace, in an empty directory, as a reader's ``bank.py`` grows. A ```text block right
after one is what it must print (``...`` stands for anything within a line).

Blocks tagged ``postgres`` (```python tutorial postgres) need the server: they run, with
``BANK_PG_URL`` set to a fresh database, in the second test, which skips without a server
(fails under CQRSKIT_REQUIRE_POSTGRES=1, like every ``pg_url`` test). The first test runs
the rest, so the tutorial is checked on machines without PostgreSQL too.

Plain ```python blocks are tests/integration/test_docs_examples.py's (each runs alone);
the tutorial's build on each other, hence their own fence and this runner."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    line: int
    """The line of the block's first line of code in the tutorial."""
    tags: frozenset[str]
    code: str
    expected: str | None
    """What it prints, from the ```text block right after it."""


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    fences = list(FENCE.finditer(text))
    for i, fence in enumerate(fences):
        info = fence.group(1).split()
        if info[:2] != ["python", "tutorial"]:
            continue
        expected = None
        following = fences[i + 1] if i + 1 < len(fences) else None
        if (
            following is not None
            and following.group(1).strip() == "text"
            and not text[fence.end() : following.start()].strip()
        ):
            expected = following.group(2)
        line = text.count("\n", 0, fence.start(2)) + 1
        found.append(Block(line, frozenset(info[2:]), fence.group(2), expected))
    return found


def matches(expected: str, printed: str) -> bool:
    want, got = expected.rstrip("\n").split("\n"), printed.rstrip("\n").split("\n")
    patterns = [re.escape(line).replace(re.escape("..."), ".*") for line in want]
    return len(want) == len(got) and all(
        re.fullmatch(p, line) for p, line in zip(patterns, got, strict=True)
    )


def run(skip: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the tutorial's blocks but those tagged with one of ``skip``; how many ran."""
    monkeypatch.chdir(tmp_path)
    # A real module: dataclasses and msgspec look classes' modules up in sys.modules.
    module = types.ModuleType("docs_tutorial")
    module.__file__ = str(TUTORIAL)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    ran = 0
    for block in blocks(TUTORIAL.read_text()):
        if block.tags & skip:
            continue
        where = f"docs/tutorial.md, the block at line {block.line}"
        # Padded so that a traceback's line numbers are the tutorial's.
        code = compile("\n" * (block.line - 1) + block.code, str(TUTORIAL), "exec")
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                exec(code, module.__dict__)
        except Exception as exc:
            exc.add_note(f"in {where}; it printed:\n{printed.getvalue()}")
            raise
        if block.expected is not None:
            assert matches(block.expected, printed.getvalue()), (
                f"{where} printed:\n{printed.getvalue()}\nbut the tutorial shows:\n{block.expected}"
            )
        ran += 1
    return ran


def test_the_tutorial_runs_without_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run({"postgres"}, tmp_path, monkeypatch) >= 10


@pytest.mark.postgres
def test_the_tutorial_runs_whole_on_postgresql(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANK_PG_URL", pg_url)
    ran = run(set(), tmp_path, monkeypatch)
    assert ran == len(blocks(TUTORIAL.read_text()))


def test_every_python_block_of_the_tutorial_is_run_somewhere() -> None:
    text = TUTORIAL.read_text()
    for fence in FENCE.finditer(text):
        info = fence.group(1).split()
        if info and info[0] in {"python", "py", "python3", "pycon"}:
            # "python" alone is test_docs_examples' (run on its own); ours say "tutorial"
            assert info == ["python"] or info[:2] == ["python", "tutorial"], fence.group(1)
    assert blocks(text), "no ```python tutorial block found"


def test_the_runner_compares_output_with_wildcards() -> None:
    assert matches("a ... c\n", "a b-1 c\n")
    assert not matches("a ... c\n", "a b c\nmore\n")
    assert not matches("x\n", "y\n")
    sample = (
        "```python tutorial\nprint(1)\n```\n\n```text\n1\n```\n\n```python tutorial pg\nx\n```\n"
    )
    first, second = blocks(sample)
    assert (first.line, first.expected, second.tags) == (2, "1\n", frozenset({"pg"}))
