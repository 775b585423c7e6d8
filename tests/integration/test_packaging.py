"""The core distribution needs msgspec alone: its wheel, installed into a fresh virtual
environment, pulls in nothing else, and an app runs there on memory:// and SQLite (issue
10: ``pip install cqrskit`` must not force FastAPI, uvicorn, typer, rich or psycopg on a
user who wants the event store)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys
from dataclasses import dataclass
from cqrskit import App, Event, Projection, RecordedEvent, SqlTx, handles


@dataclass(frozen=True)
class Said(Event):
    text: str


class Log(Projection):
    name = "log"
    tables = ("log",)

    def create_schema(self, tx: SqlTx) -> None:
        tx.execute("CREATE TABLE IF NOT EXISTS log (text TEXT)")

    @handles(Said)
    def on_said(self, tx: SqlTx, event: Said, record: RecordedEvent) -> None:
        tx.execute("INSERT INTO log VALUES (?)", (event.text,))


class Echo(App):
    events = (Said,)
    projections = (Log(),)


async def main() -> None:
    for url in ("memory://", f"sqlite:///{sys.argv[1]}"):
        async with Echo(url) as app:
            appended = await app.store.append("echo-1", [Said("hi")])
            await app.wait_for([Log], appended.position)
            rows = await app.db.read(lambda tx: tx.fetchall("SELECT text FROM log"))
            assert rows == [("hi",)], rows


asyncio.run(main())
loaded = {name.split(".")[0] for name in sys.modules}
print(sorted(loaded & {"fastapi", "starlette", "pydantic", "uvicorn", "typer", "rich",
                       "psycopg", "psycopg_pool", "httpx", "msgspec"}))
"""


def run(*args: str | Path, cwd: Path) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_the_core_wheel_needs_msgspec_alone(tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path, ROOT, cwd=ROOT)
    (wheel,) = tmp_path.glob("cqrskit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(meta).decode()
    assert not [n for n in names if n.startswith(("social/", "examples/", "tests/"))]
    console = {f"cqrskit/fastapi/_console/{f}" for f in ("console.html", "console.js")}
    assert console <= set(names), "the operations console's files are package data"
    required = [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert required == ["msgspec>=0.18"]
    assert "License-Expression: MIT" in metadata

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    installed = json.loads(run(python, "-m", "pip", "list", "--format=json", cwd=tmp_path))
    names_installed = {p["name"].lower() for p in installed} - {"pip", "setuptools", "wheel"}
    assert names_installed == {"cqrskit", "msgspec"}
    loaded = run(python, "-c", SCRIPT, tmp_path / "data", cwd=tmp_path)
    assert loaded.strip() == "['msgspec']"
    version = run(python, "-c", "import cqrskit; print(cqrskit.__version__)", cwd=tmp_path)
    assert version.strip() == "0.1.0"
