"""Measuring tools shared by the benchmarks: pacing, percentiles, process CPU and memory.

Nothing here knows about a particular bus: the bus and relay benchmarks
build their scenarios from these pieces, and ``bench.procs`` (the daemons)
builds on them: this module imports nothing from ``bench``.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

MB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count); NaN when empty."""
    return statistics.median(values) if values else float("nan")


class Pacer:
    """Spread ``rate`` sends per second evenly; ``None`` means as fast as possible.

    ``wait(i)`` sleeps until send number ``i`` is due. A sender that fell
    behind is not slowed further, so its achieved rate shows how far it fell.
    """

    def __init__(self, rate: float | None, slack: float = 0.0002) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.slack = slack
        self.start = time.perf_counter()

    def wait(self, i: int) -> None:
        if self.interval:
            delay = self.start + i * self.interval - time.perf_counter()
            if delay > self.slack:
                time.sleep(delay)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; ``AssertionError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.01) -> object:
    """``wait_for`` for the benchmarks' own runs: ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    try:
        return wait_for(predicate, timeout, interval, what)
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


@dataclass
class ProcessMeter:
    """CPU time and memory of one process (all its threads), read through psutil."""

    pid: int
    process: psutil.Process = field(init=False)
    samples: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.pid)

    def cpu(self) -> float:
        """User + system CPU seconds used so far."""
        times = self.process.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        """Resident memory now, in bytes; also kept as a sample."""
        value = self.process.memory_info().rss
        self.samples.append(value)
        return value

    def peak_rss(self) -> int:
        """Highest resident memory of the process's life (Linux VmHWM), else of the samples."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return max(self.samples, default=0)


def venv_bin(name: str) -> str:
    """The path of console script ``name`` next to this interpreter (the project's .venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def load_note() -> str:
    """The machine's load, to print beside the figures (the numbers are only as quiet as the host)."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min)"


def thread_schedstat(pid: int) -> dict[int, tuple[float, int]]:
    """(CPU seconds, times run) of each thread of ``pid``, from ``/proc/PID/task/TID/schedstat``
    (nanoseconds); a thread that ended meanwhile is left out. ``OSError`` when the process has none."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue
        found[int(task.name)] = (int(fields[0]) / 1e9, int(fields[2]))
    return found


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid``: from ``thread_schedstat`` (nanoseconds), else from psutil
    (clock ticks, 10 ms)."""
    try:
        return {tid: seconds for tid, (seconds, _) in thread_schedstat(pid).items()}
    except (OSError, ValueError, IndexError):
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
