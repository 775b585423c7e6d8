"""The benchmark suite imports and its bookkeeping works, so it cannot rot silently.

Runs no benchmark: statistics, the results file and the table on fake numbers, and the
workload generators (which every system shares).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from benchmarks import SYSTEMS
from benchmarks.http_bench import WORKERS, figure_name
from benchmarks.loadgen import cpu_seconds, machine_busy_seconds
from benchmarks.orchestrate import GROUPS, Selection
from benchmarks.report import markdown, rows, workers_rows
from benchmarks.stats import (
    UNITS,
    Samples,
    kernel_notes,
    kernel_settings,
    machine_info,
    percentile,
    results_document,
    summarize,
    write_results,
)
from benchmarks.workload import ClientScript, Follow, Publish, Register, history

MODULES = [
    "benchmarks.__main__",
    "benchmarks.config",
    "benchmarks.cqrskit_system",
    "benchmarks.es_system",
    "benchmarks.http_bench",
    "benchmarks.loadgen",
    "benchmarks.measure",
    "benchmarks.orchestrate",
    "benchmarks.pg",
    "benchmarks.pg_appends",
    "benchmarks.raw_system",
    "benchmarks.relay_bench",
    "benchmarks.report",
    "benchmarks.slow_clients",
    "benchmarks.worker",
]


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_modules_import(name: str) -> None:
    importlib.import_module(name)


def test_summary_is_median_with_min_and_max() -> None:
    figure = summarize("commands_per_s_1", "raw", "sqlite", [30.0, 10.0, 20.0, 50.0])
    assert (figure.median, figure.min, figure.max) == (25.0, 10.0, 50.0)
    assert figure.unit == "commands/s"
    assert figure.samples == 4


def test_summary_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        summarize("lag_p99_ms", "raw", "sqlite", [])


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0


def test_samples_group_repetitions_and_refuse_unknown_figures() -> None:
    samples = Samples()
    for value in (1.0, 3.0, 2.0):
        samples.add("cqrskit", "sqlite", {"lag_p50_ms": value})
    samples.add("raw", "sqlite", {"lag_p50_ms": 4.0})
    figures = {(f.system, f.name): f for f in samples.figures()}
    assert figures[("cqrskit", "lag_p50_ms")].median == 2.0
    assert figures[("raw", "lag_p50_ms")].samples == 1
    with pytest.raises(ValueError, match="unknown figure"):
        samples.add("raw", "sqlite", {"bogus": 1.0})


def test_results_file_has_the_documented_schema(tmp_path: Path) -> None:
    samples = Samples()
    for system, value in zip(SYSTEMS, (3000.0, 1000.0, 6000.0), strict=True):
        samples.add(system, "sqlite", {"commands_per_s_32": value, "lag_p99_ms": value / 1000})
    document = results_document(machine_info("15.2"), samples.figures(), {"quick": True})
    path = tmp_path / "results" / "latest.json"
    write_results(path, document)

    loaded = json.loads(path.read_text())
    assert set(loaded["machine"]) >= {"cpu", "cores", "python", "sqlite_version", "pg_version"}
    assert set(loaded["machine"]["kernel"]) == {"cpuidle_driver", "halt_poll_ns", "page_reclaim"}
    assert loaded["machine"]["pg_version"] == "15.2"
    for figure in loaded["figures"]:
        assert set(figure) >= {"name", "system", "backend", "median", "min", "max", "unit"}
        assert figure["unit"] == UNITS[figure["name"]]

    table = {(r[0], r[1]): r for r in rows(loaded)}
    # cqrskit/eventsourcing and cqrskit/raw on medians; inverted for latencies.
    assert table[("commands_per_s_32", "sqlite")][-2:] == ["3.00x", "0.50x"]
    assert table[("lag_p99_ms", "sqlite")][-2:] == ["0.33x", "2.00x"]
    assert "| commands_per_s_32 | sqlite |" in markdown(loaded)


def test_http_figures_of_two_workers_sit_beside_one_workers_with_their_ratio() -> None:
    assert WORKERS == (1, 2)
    assert figure_name("http_get_rps", 1) == "http_get_rps"
    assert figure_name("http_get_rps", 2) == "http_get_rps_w2"
    one = (
        "http_get_rps", "http_get_p99_ms", "http_post_rps", "http_post_p99_ms",
        "http_post_keyed_rps", "http_post_keyed_p99_ms", "http_post_keyed_ratio",
    )  # fmt: skip
    assert set(GROUPS["http"]) == {n for name in one for n in (name, figure_name(name, 2))}
    assert Selection("http_post_rps_w2").groups == {"http"}

    samples = Samples()
    for one_worker, two_workers in ((2000.0, 3000.0), (2200.0, 3300.0)):
        samples.add("cqrskit", "sqlite", {"http_get_rps": one_worker, "http_get_p99_ms": 50.0})
        samples.add(
            "cqrskit", "sqlite", {"http_get_rps_w2": two_workers, "http_get_p99_ms_w2": 100.0}
        )
    samples.add("cqrskit", "postgresql", {"http_get_rps": 1000.0})  # no 2-worker figure
    document = results_document(machine_info(None), samples.figures(), {})

    # The plain ratio of medians, 2 workers over 1, latencies not inverted.
    assert workers_rows(document) == [
        ["http_get_rps", "sqlite", "requests/s", "2,100 [2,000-2,200]", "3,150 [3,000-3,300]",
         "1.50x"],
        ["http_get_p99_ms", "sqlite", "ms", "50.0 [50.0-50.0]", "100 [100-100]", "2.00x"],
    ]  # fmt: skip
    text = markdown(document)
    assert "| http_get_rps_w2 | sqlite | requests/s | 3,150 [3,000-3,300] |" in text
    assert "| http_get_rps | sqlite | requests/s | 2,100 [2,000-2,200] | 3,150" in text
    assert "2 workers / 1 worker" not in markdown(results_document({}, [], {}))


def test_load_generator_reads_cpu_time() -> None:
    assert cpu_seconds([]) == 0.0
    assert cpu_seconds([os.getpid()]) > 0.0
    assert cpu_seconds([2**22 + 1]) == 0.0  # no such process: nothing, no error
    assert machine_busy_seconds() > 0.0


def test_only_selects_groups_figures_systems_and_backends() -> None:
    selection = Selection("lag_p99_ms,raw,sqlite")
    assert selection.groups == {"lag"}
    assert selection.systems == ["raw"]
    assert selection.backends == ["sqlite"]
    everything = Selection(None)
    assert everything.systems == list(SYSTEMS)
    with pytest.raises(SystemExit):
        Selection("nonsense")


def test_history_is_deterministic_and_only_references_earlier_users() -> None:
    ops = list(history(400))
    assert ops == list(history(400))
    registered: set[object] = set()
    for op in ops:
        if isinstance(op, Register):
            registered.add(op.user_id)
        elif isinstance(op, Publish):
            assert op.author_id in registered
        else:
            assert isinstance(op, Follow)
            assert {op.follower_id, op.followee_id} <= registered
            assert op.follower_id != op.followee_id
    kinds = [type(op).__name__ for op in ops]
    assert kinds.count("Register") == 100


def test_client_script_cycles_register_post_post_follow() -> None:
    script = ClientScript(0)
    kinds = [type(script.next()).__name__ for _ in range(8)]
    # The first cycle has no previous user to follow, so it posts instead.
    first_cycle = ["Register", "Publish", "Publish", "Publish"]
    assert kinds == [*first_cycle, "Register", "Publish", "Publish", "Follow"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_the_kernel_settings_that_move_figures_are_read_from_sysfs(tmp_path: Path) -> None:
    assert kernel_settings(tmp_path) == {
        "cpuidle_driver": None,
        "halt_poll_ns": None,
        "page_reclaim": None,
    }
    _write(tmp_path / "devices/system/cpu/cpuidle/current_driver", "haltpoll")
    _write(tmp_path / "module/haltpoll/parameters/guest_halt_poll_ns", "0")
    damon = tmp_path / "kernel/mm/damon/admin/kdamonds"
    _write(damon / "0/state", "on")
    _write(damon / "0/contexts/0/schemes/0/action", "pageout")
    _write(damon / "1/state", "off")  # a stopped kdamond's schemes do nothing
    _write(damon / "1/contexts/0/schemes/0/action", "migrate_cold")
    assert kernel_settings(tmp_path) == {
        "cpuidle_driver": "haltpoll",
        "halt_poll_ns": 0,
        "page_reclaim": ["pageout"],
    }
    notes = kernel_notes(kernel_settings(tmp_path))
    assert len(notes) == 2
    assert "guest_halt_poll_ns=0" in notes[0]
    assert "DAMON" in notes[1]
    # Polling only means something with the haltpoll driver.
    _write(tmp_path / "devices/system/cpu/cpuidle/current_driver", "acpi_idle")
    assert kernel_settings(tmp_path)["halt_poll_ns"] is None
    assert kernel_notes({"halt_poll_ns": 200000, "page_reclaim": None}) == []
