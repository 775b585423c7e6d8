"""One measurement process: ``python -m benchmarks.worker '<json spec>'``.

The spec names a system and a list of jobs, each with its own :class:`Target`; the worker
prints one JSON line ``{"figures": {...}}`` on stdout. A rebuild job runs alone in its
process so its peak-memory growth is its own.
"""

from __future__ import annotations

import gc
import json
import sys
import traceback
from typing import Any, Protocol

from .measure import PeakSampler, Target
from .stats import percentile


class System(Protocol):
    name: str

    def seed(self, n_events: int) -> None: ...

    def commands(self, clients: int, seconds: float) -> float: ...

    def catchup(self, n_events: int, cap: float) -> float: ...

    def rebuild(self, n_events: int, cap: float) -> float: ...

    def lag(self, samples: int, cap: float) -> list[float]: ...

    def close(self) -> None: ...


def make_system(name: str, target: Target) -> System:
    if name == "raw":
        from .raw_system import RawSystem

        return RawSystem(target)
    if name == "eventsourcing":
        from .es_system import EventsourcingSystem

        return EventsourcingSystem(target)
    if name == "cqrskit":
        from .cqrskit_system import CqrskitSystem

        return CqrskitSystem(target)
    raise ValueError(f"unknown system {name!r}")


def run_job(system_name: str, job: dict[str, Any], sizes: dict[str, Any]) -> dict[str, float]:
    target = Target(**job["target"])
    system = make_system(system_name, target)
    try:
        kind = job["kind"]
        if kind == "seed":
            system.seed(int(job["events"]))
            return {}
        if kind == "commands":
            return {
                "commands_per_s_1": system.commands(1, sizes["command_seconds"]),
                "commands_per_s_32": system.commands(32, sizes["command_seconds"]),
            }
        if kind == "lag":
            lags = system.lag(sizes["lag_samples"], sizes["lag_time_cap"])
            return {
                "lag_p50_ms": percentile(lags, 50) * 1000,
                "lag_p99_ms": percentile(lags, 99) * 1000,
            }
        if kind == "catchup":
            figures = {
                "catchup_events_per_s": system.catchup(
                    sizes["catchup_events"], sizes["replay_time_cap"]
                )
            }
            policies = getattr(system, "catchup_policies", None)  # cqrskit's parking cost
            if policies is not None:
                figures.update(policies(sizes["catchup_events"], sizes["replay_time_cap"]))
            return figures
        if kind == "rebuild":
            gc.collect()
            with PeakSampler() as sampler:
                rate = system.rebuild(sizes["rebuild_events"], sizes["replay_time_cap"])
            return {"rebuild_events_per_s": rate, "rebuild_peak_mb": sampler.growth_mb}
        raise ValueError(f"unknown job kind {kind!r}")
    finally:
        system.close()


def main(argv: list[str]) -> int:
    """Runs every job; one failing job loses its own figures only (its error is reported
    in the output and the exit status)."""
    spec = json.loads(argv[0])
    figures: dict[str, float] = {}
    errors: list[str] = []
    for job in spec["jobs"]:
        try:
            figures.update(run_job(spec["system"], job, spec["sizes"]))
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{job['kind']}: {type(exc).__name__}: {exc}")
    print(json.dumps({"figures": figures, "errors": errors}), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
