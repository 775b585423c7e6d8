"""The slow-client check of ``make bench`` (benchmarks/slow_clients.py) measures what it
says: with tiny sizes, every round has both conditions' latencies, no normal request
failed, and the server closed slow connections at its header timeout."""

from __future__ import annotations

from pathlib import Path

from benchmarks.slow_clients import SlowCheck, run_check
from benchmarks.stats import UNITS

TINY = SlowCheck(rounds=2, seconds=1.0, slow_connections=20, header_timeout=1.0, warmup=0.2)


def test_slow_client_check_with_tiny_sizes(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_check(TINY, tmp_path, log=lines.append)

    assert result.errors == []
    assert len(result.rounds) == len(result.holders) == len(lines) == TINY.rounds
    for figures, holder in zip(result.rounds, result.holders, strict=True):
        assert set(figures) == {n for n in UNITS if n.startswith("slow_")}
        assert figures["slow_failed_requests"] == 0
        for name in ("base_p50_ms", "base_p99_ms", "under_p50_ms", "under_p99_ms", "p99_ratio"):
            assert figures[f"slow_{name}"] > 0, name
        assert figures["slow_base_p50_ms"] <= figures["slow_base_p99_ms"]
        assert figures["slow_under_p50_ms"] <= figures["slow_under_p99_ms"]
        # The server closed the slow connections itself, at its header timeout, and the
        # holder kept them all open (reopening the closed ones) while the client measured.
        assert figures["slow_closed_connections"] >= TINY.slow_connections // 2 > 0
        assert holder["answered"] == 0
        assert holder["peak"] == TINY.slow_connections
        assert figures["slow_held_connections"] > 0.9 * TINY.slow_connections
        assert abs(figures["slow_closed_after_s"] - TINY.header_timeout) < 0.5
    medians = result.medians()
    assert medians["slow_failed_requests"] == 0
    assert medians["slow_closed_connections"] > 0
    assert list(tmp_path.iterdir()) == []  # the server's data directory is gone
