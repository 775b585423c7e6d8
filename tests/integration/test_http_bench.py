"""The HTTP part of ``make bench`` (benchmarks/http_bench.py) measures what it says: with
tiny sizes, one ``social serve`` and one ``social serve --workers 2`` on fresh SQLite data
each give the four HTTP figures under their own names (``NAME``, ``NAME_w2``), and the CPU
that the load generator and every process of the server used."""

from __future__ import annotations

from pathlib import Path

from benchmarks.config import QUICK, Sizes
from benchmarks.http_bench import http_figures
from benchmarks.orchestrate import Run

TINY = Sizes(**{**QUICK.as_dict(), "http_seconds": 0.3, "http_connections": 8})
NAMES = (
    "http_get_rps",
    "http_get_p99_ms",
    "http_post_rps",
    "http_post_p99_ms",
    "http_post_keyed_rps",
    "http_post_keyed_p99_ms",
    "http_post_keyed_ratio",
)


def test_one_and_two_worker_servers_with_tiny_sizes(tmp_path: Path) -> None:
    run = Run(TINY, None, tmp_path)
    one = http_figures(run, "sqlite", workers=1)
    two = http_figures(run, "sqlite", workers=2)

    assert run.errors == []
    assert set(one) == set(NAMES)
    assert set(two) == {f"{name}_w2" for name in NAMES}
    assert all(value > 0 for value in (*one.values(), *two.values()))
    cores = run.settings["http_cores"]
    assert set(cores) == {"sqlite/w1", "sqlite/w2"}
    for used in cores.values():
        assert set(used) == {
            f"{phase}_{who}" for phase in ("get", "post") for who in ("client", "server", "machine")
        }
        # The server's processes (with --workers 2: the parent and each worker) did the work.
        assert used["get_server"][0] > 0.1
    assert list(tmp_path.iterdir()) == []  # both data directories are gone
