"""The CLI's offline commands and the token secret file, on real files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from social.cli import app
from social.infrastructure.secret import load_or_create_secret


def test_the_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_or_create_secret(data)
    assert len(first) >= 32
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    assert load_or_create_secret(data) == first
    assert list(data.iterdir()) == [data / "secret.key"]  # no temporary file left behind


def test_status_json_lists_every_read_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["user_profiles", "posts", "follows"]
    assert all(r["position"] == 0 and r["head"] == 0 and r["lag_events"] == 0 for r in rows)


def test_rebuilding_an_unknown_read_model_fails_with_a_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rebuild", "nope", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2  # a usage error (cli.EXIT_USAGE)
    assert "no read model named 'nope'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_rebuild_of_an_empty_store_succeeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rebuild", "posts", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Rebuilt posts: 0 events" in result.stdout
