"""``python -m examples.bank URL``: the demo on each backend, and from the command line on
SQLite twice (the second run finds the first one's accounts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from examples.bank.__main__ import demo, money
from examples.bank.app import Bank

ROOT = Path(__file__).resolve().parents[2]


async def test_the_demo_runs(bank: Bank) -> None:
    said: list[str] = []
    await demo(bank, said.append)
    assert said[:4] == [
        "transfers left in flight by an earlier run: 0",
        "transfer of 25.00 from Ada to Bob: completed",
        "Ada has 75.00 at version 4",
        "Ada withdrew 30.00; her account is at version 5",
    ]
    assert "expected version 4, actual version 5" in said[4]
    assert (
        said[5]
        == "Bob cannot withdraw 1000.00: insufficient funds: balance 2500 cents, asked for 100000"
    )
    assert said[6] == "2 accounts in the bank:"


def test_money_is_shown_in_units_and_cents() -> None:
    assert [money(c) for c in (0, 5, 1_00, 12_34, -1_05)] == [
        "0.00",
        "0.05",
        "1.00",
        "12.34",
        "-1.05",
    ]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BANK_URL"}
    return subprocess.run(
        [sys.executable, "-m", "examples.bank", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_line_keeps_its_data_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bank'}"
    first, second = run(url), run(url)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[0] == f"bank on {url}"
    assert "2 accounts in the bank:" in first.stdout
    assert "4 accounts in the bank:" in second.stdout
    assert run("--help").returncode == 2
