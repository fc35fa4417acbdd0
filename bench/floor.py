"""The bus, the bare proxy and the Python floor, in one run: ``python -m bench.floor``.

This benchmark runs a third system between the bus and the proxy: the
*Python floor* (``python -m bench.reference --python``), a Python daemon
that does nothing per event but wait on the socket, ``recv`` and ``send``,
with the proxy's bare clients. What the floor costs over the proxy no
Python daemon can avoid; what the bus costs over the floor is its own work
(checks, numbering, window, journal) and its client library's. The targets
are the floor's: daemon CPU per event at most 1.3× the floor's, zero-loss
rates at least 75% of the floor's.

Figures, 100 B events, the systems taking turns trial by trial:

- CPU per event at a fixed 500 and 2,000 events/s (1→1), the daemon's main
  thread and its other threads (libzmq's I/O thread, the journal's sync
  thread) apart, in nanoseconds from ``/proc/PID/task/TID/schedstat``;
- the zero-loss rate, 1→1 and 2→4 (two publishers, four subscribers),
  searched as ``bench.bus`` does.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import psutil

from bench.bus import zero_loss_rates
from bench.clients import Crew
from bench.measure import load_note, thread_seconds
from bench.systems import running_bus, running_reference

KINDS = ("reference", "floor", "bus")
NAMES = {"reference": "bare proxy (C)", "floor": "Python floor", "bus": "eventbus"}
RATES = (500, 2000)
SEGMENTS = 6
TOPOLOGIES = ((1, 1), (2, 4))
# The bus against the floor: daemon CPU per event at most this multiple, zero-loss rates at least this share.
TARGET_QUIET_CPU = 1.3
TARGET_THROUGHPUT = 0.75


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class ThreadCpu:
    """CPU µs per event of a daemon's main thread and of its other threads."""

    main: float
    others: float

    @property
    def total(self) -> float:
        return self.main + self.others


def quiet_cpu(crews: dict[str, Crew], processes: dict[str, psutil.Process], rate: int,
              seconds: float) -> dict[str, ThreadCpu]:
    """CPU per event of each daemon while 100 B events come at a fixed ``rate``, in alternating segments."""
    main = dict.fromkeys(crews, 0.0)
    others = dict.fromkeys(crews, 0.0)
    sent = dict.fromkeys(crews, 0)
    for segment in range(SEGMENTS):
        for kind in crews if segment % 2 else reversed(list(crews)):
            process = processes[kind]
            before = thread_seconds(process.pid)
            sent[kind] += crews[kind].trial(100, rate, seconds / SEGMENTS).sent
            for tid, used in thread_seconds(process.pid).items():
                spent = used - before.get(tid, 0.0)
                if tid == process.pid:
                    main[kind] += spent
                else:
                    others[kind] += spent
    return {kind: ThreadCpu(main[kind] / sent[kind] * 1e6, others[kind] / sent[kind] * 1e6) for kind in crews}


def _row(figure: str, unit: str, values: dict[str, float], target: float | None = None) -> str:
    """A table row; with ``target``, eventbus ÷ floor is held against it (a CPU at most, a rate at least)."""
    def shown(value: float) -> str:
        return f"{value:,.0f}" if unit == "events/s" else f"{value:.1f}"
    proxy, floor, bus = (values[kind] for kind in KINDS)
    ratio = bus / floor
    if target is None:
        goal = verdict = ""
    elif unit == "events/s":
        goal, verdict = f"eventbus ≥ {target:.0%} of floor", "PASS" if ratio >= target else "FAIL"
    else:
        goal, verdict = f"eventbus ≤ {target:g}× floor", "PASS" if ratio <= target else "FAIL"
    return (f"| {figure} | {unit} | {shown(proxy)} | {shown(floor)} | {shown(bus)} | "
            f"{floor / proxy:.2f} | {bus / proxy:.2f} | {ratio:.2f} | {goal} | {verdict} |")


def measure(seconds: float, quiet_seconds: float, steps: int) -> tuple[list[str], list[str]]:
    """Every figure on the three systems; the table's rows and a log of the searches."""
    rows: list[str] = []
    log: list[str] = []
    with running_reference() as (proxy, proxy_target), running_reference(python=True) as (floor, floor_target), \
            running_bus() as (bus, bus_target):
        daemons = {"reference": proxy, "floor": floor, "bus": bus}
        targets = {"reference": proxy_target, "floor": floor_target, "bus": bus_target}
        processes = {kind: psutil.Process(daemons[kind].pid) for kind in KINDS}
        meters = {kind: daemons[kind].meter() for kind in KINDS}
        for publishers, subscribers in TOPOLOGIES:
            crews = {kind: Crew(targets[kind], publishers, subscribers) for kind in KINDS}
            try:
                for crew in crews.values():
                    crew.warm()
                if (publishers, subscribers) == (1, 1):
                    for rate in RATES:
                        progress(f"CPU per event at {rate:,}/s")
                        found = quiet_cpu(crews, processes, rate, quiet_seconds)
                        for kind, cpu in found.items():
                            log.append(f"{rate:,}/s {NAMES[kind]}: main thread {cpu.main:.1f} µs, "
                                       f"other threads {cpu.others:.1f} µs per event")
                        rows.append(_row(f"daemon CPU per event at {rate:,}/s, all threads", "µs",
                                         {kind: cpu.total for kind, cpu in found.items()}, TARGET_QUIET_CPU))
                        rows.append(_row("the same, main thread only", "µs",
                                         {kind: cpu.main for kind, cpu in found.items()}))
                name = f"{publishers}→{subscribers}"
                progress(f"zero-loss throughput {publishers}->{subscribers} 100 B")
                searches = zero_loss_rates(crews, meters, 100, seconds, steps, KINDS)
                for kind, search in searches.items():
                    log.append(f"zero-loss {name} {NAMES[kind]}: {search.rate:,.0f}/s ({'; '.join(search.trials)})")
                rows.append(_row(f"zero-loss throughput {name}, 100 B", "events/s",
                                 {kind: search.rate for kind, search in searches.items()}, TARGET_THROUGHPUT))
            finally:
                for crew in crews.values():
                    crew.close()
    return rows, log


def main(argv: Sequence[str] | None = None) -> str:
    """Run the floor benchmark; print and return its Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one throughput trial (1.5)")
    parser.add_argument("--quiet-seconds", type=float, default=12.0, help="time at each fixed rate, per system (12)")
    parser.add_argument("--steps", type=int, default=5, help="paced trials after the flat-out probe (5)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = load_note()
    rows, log = measure(args.seconds, args.quiet_seconds, args.steps)
    lines = ["## The bus against the proxy and the Python floor (same run)", "",
             "| figure | unit | bare proxy | Python floor | eventbus | floor ÷ proxy | eventbus ÷ proxy "
             "| eventbus ÷ floor | target | result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|", *rows, "",
             f"Host: {load_before} at the start, {load_note()} at the end; "
             f"took {time.perf_counter() - started:.0f} s.", "",
             *[f"- {line}" for line in log], ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
