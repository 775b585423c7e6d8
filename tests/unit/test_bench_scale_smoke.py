"""The scale benchmark (``make bench-scale``) runs end to end at a tiny size, so it cannot
rot silently: every step in its own process, on SQLite, a 2,000-event log (a few seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.scale import run, sizes
from benchmarks.scale_report import FLAT, UNITS, markdown, ratio
from benchmarks.scale_workload import LogWriter, Shape


def test_scale_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    argv = ["--sizes", "1000,2000", "--pg-sizes", "", "--out", str(out)]
    argv += ["--workdir", str(tmp_path), "--width", "10", "--stream-length", "100"]
    argv += ["--probe-events", "500", "--loads", "20", "--quiet-wait", "0"]
    assert run(argv) == 0

    document = json.loads(out.read_text())
    assert document["settings"]["errors"] == []
    figures = {(f["name"], f["size"]): f for f in document["figures"]}
    assert set(figures) == {(name, size) for name in UNITS for size in (1000, 2000)}
    for figure in figures.values():
        assert figure["backend"] == "sqlite"
        assert figure["unit"] == UNITS[figure["name"]]
        assert figure["value"] > 0, figure
    text = markdown(document)
    assert "| sqlite | 2k / 1k |" in text
    assert f"sqlite {FLAT[0]}: 2k / 1k" in text
    assert not list(tmp_path.glob("cqrskit-scale-*"))  # the scratch directories are gone

    plot = pytest.importorskip("benchmarks.scale_plot")
    png = tmp_path / "scale.png"
    plot.plot(document, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_log_interleaves_complete_streams() -> None:
    writer = LogWriter(Shape(width=3, length=2))
    batches = [writer.batch(100) for _ in range(4)]
    # Each batch: one event for every account of the generation, expecting its version.
    assert [[a.expected_version for a in b] for b in batches] == [[0] * 3, [1] * 3] * 2
    assert [a.stream_id for a in batches[0]] == [a.stream_id for a in batches[1]]
    assert not {a.stream_id for a in batches[0]} & {a.stream_id for a in batches[2]}
    assert len(writer.batch(2)) == 2
    assert writer.written == 14


def test_ratios_read_above_one_as_better_and_sizes_parse() -> None:
    assert ratio("append_events_per_s", 900.0, 1000.0) == pytest.approx(0.9)
    assert ratio("stream_load_ms", 2.0, 1.0) == pytest.approx(0.5)
    assert sizes("100000,1M, 10M") == [100_000, 1_000_000, 10_000_000]
    assert sizes("") == []
