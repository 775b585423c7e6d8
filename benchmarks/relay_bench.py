"""The relay to NATS JetStream (:mod:`cqrskit.relay`) against raw nats-py, side by side.

Each round, in a fresh process, on a SQLite log of ``events`` events (the social
workload's ``PostPublished``-sized payloads) and the NATS server at ``--nats-url``:

- **relay_events_per_s** (system ``cqrskit``): :class:`cqrskit.relay.Relay` publishes the
  whole log to a fresh stream: reading it, building each message (subject, headers, JSON
  body with the decoded payload), publishing in batches of ``batch`` and awaiting the
  acknowledgements of each batch before the next; from start to the last acknowledgement.
- **relay_events_per_s** (system ``raw``): nats-py alone publishes the *same messages*,
  prepared beforehand, to another fresh stream: ``js.publish_async`` with ``Nats-Msg-Id``,
  the acknowledgements of each batch awaited before the next. The physical limit of the
  same work in Python; the two run in alternating order.
- **relay_ratio**: the first over the second (target: at least 0.5x).
- **relay_lag_p50_ms / relay_lag_p99_ms**: a writer process appends one event every
  ``1/rate`` seconds for ``lag_seconds`` while the relay follows the log (in another
  process, as deployed: it polls SQLite's head every 50 ms, the backend's cross-process
  wake-up); each event's lag is from its ``recorded_at`` (its append, committed within a
  millisecond on SQLite) to the broker's acknowledgement of it.

``python -m benchmarks.relay_bench [--quick]`` runs one round and prints its figures as
JSON; ``python -m benchmarks --only relay`` runs the rounds as part of the suite. Streams
are named ``BENCH_RELAY_<n>`` and deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cqrskit import App, Event

from .stats import percentile

if TYPE_CHECKING:
    from .orchestrate import Run

NATS_URL = os.environ.get("CQRSKIT_BENCH_NATS_URL", "nats://127.0.0.1:4222")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class RelaySizes:
    rounds: int
    events: int
    """Length of the log each throughput run publishes."""
    lag_seconds: float
    rate: float
    """Appends per second during the lag run."""
    batch: int = 500

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = RelaySizes(rounds=3, events=50_000, lag_seconds=6.0, rate=200.0)
QUICK = RelaySizes(rounds=3, events=10_000, lag_seconds=2.0, rate=200.0)


@dataclass(frozen=True)
class PostPublished(Event):
    post_id: str
    author_id: str
    text: str
    created_at: float


class Bench(App):
    events: ClassVar = (PostPublished,)


def post(n: int) -> PostPublished:
    text = f"post {n}: " + "lorem ipsum dolor sit amet " * 4
    return PostPublished(str(uuid.uuid4()), f"user-{n % 97}", text, time.time())


async def seed(url: str, events: int) -> None:
    async with Bench(url, run_projections=False) as app:
        for start in range(0, events, 500):
            chunk = [post(n) for n in range(start, min(events, start + 500))]
            await app.store.append(f"post-{start}", chunk)


# -- throughput --------------------------------------------------------------------------------


async def relay_rate(url: str, nats_url: str, events: int, batch: int) -> float:
    from cqrskit.relay import JetStreamPublisher, Relay

    name, prefix = _stream()
    async with Bench(url, run_projections=False) as app:
        done = asyncio.Event()
        publisher = JetStreamPublisher(nats_url, name, prefix)
        relay = Relay(app.store, publisher, prefix, batch_size=batch)

        def acked(_: object) -> None:
            if relay.published >= events:
                done.set()

        relay.on_acked = acked
        try:
            began = time.perf_counter()
            task = asyncio.create_task(relay.run(done))
            await done.wait()
            seconds = time.perf_counter() - began
            await task
        finally:
            await _delete(nats_url, name)
    return events / seconds


async def raw_rate(url: str, nats_url: str, events: int, batch: int) -> float:
    """nats-py alone, publishing the messages the relay would, prepared beforehand."""
    import nats
    from nats.js.api import StorageType

    from cqrskit.relay import to_message

    name, prefix = _stream()
    async with Bench(url, run_projections=False) as app:
        records = await app.store.read_all(0, events)
        messages = [to_message(r, app.store.codec, prefix) for r in records]
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(publish_async_max_pending=batch * 2)
        await js.add_stream(name=name, subjects=[f"{prefix}.>"], storage=StorageType.FILE)
        began = time.perf_counter()
        for start in range(0, len(messages), batch):
            acks = [
                await js.publish_async(m.subject, m.body, headers={"Nats-Msg-Id": m.event_id})
                for m in messages[start : start + batch]
            ]
            await asyncio.gather(*acks)
        seconds = time.perf_counter() - began
        await js.delete_stream(name)
    finally:
        await nc.close()
    return len(messages) / seconds


# -- lag -------------------------------------------------------------------------------------


async def lag(url: str, nats_url: str, sizes: RelaySizes) -> list[float]:
    """Milliseconds from each event's append to the broker's acknowledgement of it."""
    from cqrskit.relay import JetStreamPublisher, Relay

    name, prefix = _stream()
    lags: list[float] = []
    written = int(sizes.rate * sizes.lag_seconds)
    caught_up, all_acked = asyncio.Event(), asyncio.Event()

    async with Bench(url, run_projections=False) as app:
        head = await app.store.head_position()

        def acked(events: Any) -> None:
            if caught_up.is_set():
                now = time.time()
                lags.extend((now - e.recorded_at) * 1000 for e in events)
                if len(lags) >= written:
                    all_acked.set()
            elif events[-1].position >= head:
                caught_up.set()  # the seeded log is published: from now on, the lag

        relay = Relay(app.store, JetStreamPublisher(nats_url, name, prefix), prefix,
                      batch_size=sizes.batch, on_acked=acked)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop))
        try:
            await asyncio.wait_for(caught_up.wait(), 120)
            writer = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.relay_bench", "--write", url,
                str(sizes.rate), str(sizes.lag_seconds), cwd=ROOT,
            )  # fmt: skip
            await writer.wait()
            await asyncio.wait_for(all_acked.wait(), 10)
        finally:
            stop.set()
            await task
            await _delete(nats_url, name)
    return lags


async def write_steadily(url: str, rate: float, seconds: float) -> None:
    """One append of one event every ``1/rate`` seconds (the writer process of ``lag``)."""
    async with Bench(url, run_projections=False) as app:
        began = time.perf_counter()
        for n in range(int(rate * seconds)):
            pause = began + n / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            await app.store.append(f"lag-{n}", [post(n)])


# -- one round -------------------------------------------------------------------------------


def _stream() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"BENCH_RELAY_{tag}", f"bench{tag}.events"


async def _delete(nats_url: str, name: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(name)
    except Exception:  # never created: nothing to delete
        pass
    finally:
        await nc.close()


async def one_round(
    sizes: RelaySizes, nats_url: str, workdir: Path, order: int
) -> dict[str, float]:
    url = f"sqlite:///{workdir / f'relay-{uuid.uuid4().hex[:8]}'}"
    await seed(url, sizes.events)
    rates: dict[str, float] = {}
    runs = [("relay", relay_rate), ("raw", raw_rate)]
    for label, measure in runs[order % 2 :] + runs[: order % 2]:
        rates[label] = await measure(url, nats_url, sizes.events, sizes.batch)
    lags = await lag(url, nats_url, sizes)
    return {
        "relay_events_per_s": rates["relay"],
        "raw_relay_events_per_s": rates["raw"],
        "relay_ratio": rates["relay"] / rates["raw"],
        "relay_lag_p50_ms": percentile(lags, 50),
        "relay_lag_p99_ms": percentile(lags, 99),
    }


def nats_answers(nats_url: str) -> bool:
    async def check() -> bool:
        import nats

        try:
            nc = await nats.connect(nats_url, allow_reconnect=False, max_reconnect_attempts=1)
        except Exception:
            return False
        try:
            await nc.jetstream().account_info()
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    return asyncio.run(check())


def run_rounds(run: Run, quick: bool, rounds: int | None, log: Any) -> None:
    """The rounds of the suite (``python -m benchmarks --only relay``), one process each:
    ``relay_events_per_s`` of the raw run goes in as system ``raw``, side by side."""
    sizes = QUICK if quick else FULL
    if rounds:
        sizes = RelaySizes(**{**sizes.as_dict(), "rounds": rounds})
    if not nats_answers(NATS_URL):
        log(f"[yellow]relay: no NATS with JetStream at {NATS_URL}: skipped[/yellow]")
        return
    began = time.perf_counter()
    for n in range(sizes.rounds):
        argv = [sys.executable, "-m", "benchmarks.relay_bench", "--round", str(n),
                "--workdir", str(run.workdir), *(["--quick"] if quick else [])]  # fmt: skip
        if rounds:
            argv += ["--rounds", str(rounds)]
        figures = run._subprocess(argv, timeout=600, label=f"relay round {n + 1}")
        if not figures:
            continue
        raw = {"relay_events_per_s": figures.pop("raw_relay_events_per_s")}
        run.samples.add("cqrskit", "sqlite", figures)
        run.samples.add("raw", "sqlite", raw)
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
        log(f"relay round {n + 1}/{sizes.rounds}: {shown}, raw={raw['relay_events_per_s']:,.0f}")
    run.settings["relay"] = {"sizes": sizes.as_dict(), "nats_url": NATS_URL}
    log(f"relay/sqlite: {time.perf_counter() - began:.1f} s")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--round", type=int, default=0, help="which round (alternates the order)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--write", nargs=3, metavar=("URL", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.write:
        url, rate, seconds = args.write
        asyncio.run(write_steadily(url, float(rate), float(seconds)))
        return 0
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        figures = asyncio.run(one_round(sizes, NATS_URL, Path(workdir), args.round))
    print(json.dumps({"figures": figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
