"""System calls and CPU per event of the daemon and its two clients at a fixed rate: ``python -m bench.syscalls``.

``python -m bench.syscalls [--system bus --system floor] [--tree DIR] [--rate 500] [--events 500,2500] [--runs 3]``

One publisher and one subscriber (the processes of ``bench.clients``, as a
user's) pass 100 B events at ``--rate`` through a real daemon: the master
started as a user starts it (``bus``), the Python floor (``floor``, see
``bench.reference``) or the C proxy (``proxy``); ``--tree DIR`` adds the
master of another checkout (``bench/codetree.py``) with clients that import
that checkout's ``eventbus`` library, for a before/after table. Each figure is the difference of two runs of different event
counts divided by the difference of the counts, so start-up, attaching and
the idle time around a run cancel out:

- system calls per event by name, from ``strace -c -f`` attached to one
  process (all its threads) at a time; a count, which depends on the host's
  load only through how events batch (shown by the ``sendto`` and
  ``recvfrom`` rows: one of each per event when every event is a wake-up);
- CPU µs per event of each process (the daemon's main thread and its other
  threads apart) from ``/proc``, in runs without strace, the systems taking
  turns run by run; the median of ``--runs`` pairs, as noisy as the host.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence

from bench.bus import latencies_at
from bench.clients import Crew, Target
from bench.codetree import eventbus_command, tree_env
from bench.measure import ProcessMeter, load_note, median, thread_seconds, wait_until
from bench.procs import Daemon, free_port, short_tmpdir
from bench.systems import running_bus, running_reference

NAMES = {"bus": "eventbus", "floor": "Python floor", "proxy": "bare proxy (C)"}
ROLES = ("daemon", "publisher", "subscriber")
CPU_ROLES = ("daemon-main", "daemon-other", "publisher", "subscriber")
SIZE = 100
# strace -c's table: "% time  seconds  usecs/call  calls  errors  syscall"; errors may be blank.
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def running_tree(tree: Path) -> Iterator[tuple[Daemon, Target]]:
    """The master of checkout ``tree`` on a fresh config, ready (it answered a ping), stopped and removed after."""
    import yaml

    from eventbus.bus import control
    from eventbus.errors import BusUnavailableError

    root = short_tmpdir("ebst")
    conf = root / "conf"
    conf.mkdir()
    (conf / "master").write_text(yaml.safe_dump({"root_dir": str(root), "sock_dir": "s", "log_level": "warning",
                                                 "publish_port": free_port(), "ret_port": free_port()}))
    daemon = Daemon(eventbus_command(tree, "master", "-c", str(conf)), root / "master.log", cwd=tree,
                    env=tree_env(tree), name=f"master of {tree}")

    def answers() -> bool:
        daemon.check_alive()
        try:
            control.ping(root / "s", timeout=0.5)
            return True
        except BusUnavailableError:
            return False
    try:
        daemon.start()
        wait_until(answers, 30, f"the master of {tree} to answer a ping")
        yield daemon, Target("bus", str(conf / "master"))
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def _running(system: str) -> contextlib.AbstractContextManager:
    if system == "bus":
        return running_bus()
    if system in ("floor", "proxy"):
        return running_reference(python=system == "floor")
    return running_tree(Path(system))


@contextlib.contextmanager
def _clients_of(system: str, root: Path) -> Iterator[None]:
    """Client processes started meanwhile import the ``eventbus`` library of tree ``system`` (``bench`` stays
    this checkout's): a folder holding only a link to it goes first on the ``sys.path`` they are given."""
    if system in NAMES:
        yield
        return
    folder = root / f"lib-{len(list(root.iterdir()))}"
    folder.mkdir()
    (folder / "eventbus").symlink_to(Path(system) / "eventbus")
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def _counts(path: Path) -> Counter:
    counts: Counter = Counter()
    for line in path.read_text().splitlines():
        found = _ROW.match(line)
        if found and found.group(2) != "total":
            counts[found.group(2)] += int(found.group(1))
    return counts


def _attached(log: Path, timeout: float = 10.0) -> None:
    """Wait until strace says it attached (it writes its own messages to stderr, not to ``-o``)."""
    deadline = time.monotonic() + timeout
    while "attached" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"strace did not attach: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.02)


def traced_run(crew: Crew, role: str, pid: int, events: int, rate: float, root: Path) -> Counter:
    """System calls of process ``pid`` (all its threads) while ``events`` pass at ``rate``.

    One process is traced at a time: ptrace slows each system call, and a
    slowed publisher would send in bursts, which changes what is measured.
    """
    log, out = root / f"{role}.strace.log", root / f"{role}.strace"
    with open(log, "w") as err:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        _attached(log)
        result = crew.trial(SIZE, rate, events / rate, count=events)
        if not result.lossless or result.sent != events:
            raise RuntimeError(f"a traced run lost events: sent {result.sent}, seen {result.seen[0]['received']}")
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    return _counts(out)


def cpu_run(crew: Crew, pids: dict[str, int], events: int, rate: float) -> dict[str, float]:
    """CPU seconds of each process (``daemon-main``, ``daemon-other``) while ``events`` pass at ``rate``."""
    before = {role: thread_seconds(pid) for role, pid in pids.items()}
    result = crew.trial(SIZE, rate, events / rate, count=events)
    if result.sent != events:
        raise RuntimeError(f"a CPU run sent {result.sent} events, not {events}")
    used = dict.fromkeys(CPU_ROLES, 0.0)
    for role, pid in pids.items():
        for tid, seconds in thread_seconds(pid).items():
            spent = seconds - before[role].get(tid, 0.0)
            if role == "daemon":
                used["daemon-main" if tid == pid else "daemon-other"] += spent
            else:
                used[role] += spent
    return used


Result = tuple[dict[str, dict[str, float]], dict[str, float]]


def pin(pid: int, cpu: int) -> None:
    """Keep every thread of ``pid`` on ``cpu``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def measure(systems: Sequence[str], counts: tuple[int, int], rate: float, runs: int,
            trace: bool, pinned: bool = False, latency: float = 0.0) -> dict[str, Result]:
    """(syscalls per event by role and name, CPU µs per event by role) of each system; with ``latency``,
    the CPU figures also hold ``p50-ms`` and ``p99-ms``."""
    few, many = counts
    root = short_tmpdir("ebsc")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        crews: dict[str, Crew] = {}
        pids: dict[str, dict[str, int]] = {}
        for system in systems:
            daemon, target = stack.enter_context(_running(system))
            with _clients_of(system, root):
                crews[system] = crew = stack.enter_context(Crew(target, 1, 1))
            crew.warm()
            pids[system] = {"daemon": daemon.pid, "publisher": crew.processes[0].pid,
                            "subscriber": crew.processes[1].pid}
            if pinned:
                for role, pid in pids[system].items():
                    pin(pid, 0 if role == "daemon" else 1)
        calls: dict[str, dict[str, dict[str, float]]] = {system: {} for system in systems}
        if trace:
            for system in systems:
                progress(f"{_name(system)}: strace, {few} and {many} events at {rate:g}/s")
                for role, pid in pids[system].items():
                    small = traced_run(crews[system], role, pid, few, rate, root)
                    large = traced_run(crews[system], role, pid, many, rate, root)
                    calls[system][role] = {name: (large[name] - small[name]) / (many - few)
                                           for name in set(small) | set(large)}
        latencies = {}
        if latency:
            progress(f"latency at {rate:g}/s, {latency:g} s per system")
            meters = {system: ProcessMeter(pids[system]["daemon"]) for system in systems}
            latencies = latencies_at(crews, meters, int(rate), latency)
        progress(f"CPU: {runs} x ({few}, {many}) events at {rate:g}/s, the systems taking turns")
        samples: dict[str, dict[str, list[float]]] = {system: {role: [] for role in CPU_ROLES} for system in systems}
        for run in range(runs):
            for system in (systems if run % 2 else list(reversed(systems))):
                small_cpu = cpu_run(crews[system], pids[system], few, rate)
                large_cpu = cpu_run(crews[system], pids[system], many, rate)
                for role in CPU_ROLES:
                    samples[system][role].append((large_cpu[role] - small_cpu[role]) / (many - few) * 1e6)
        cpu = {system: {role: median(values) for role, values in samples[system].items()} for system in systems}
        for system, found in latencies.items():
            cpu[system].update({"p50-ms": found.p50_ms, "p99-ms": found.p99_ms})
        return {system: (calls[system], cpu[system]) for system in systems}


def _name(system: str) -> str:
    return NAMES.get(system, f"eventbus at {system}")


def _tables(results: dict[str, Result]) -> Iterator[str]:
    systems = list(results)
    header = " | ".join(_name(s) for s in systems)
    if any(calls for calls, _ in results.values()):
        for role in ROLES:
            names = sorted({name for calls, _ in results.values() for name in calls.get(role, {})},
                           key=lambda n: -max(results[s][0].get(role, {}).get(n, 0.0) for s in systems))
            rows = [(name, [results[s][0].get(role, {}).get(name, 0.0) for s in systems]) for name in names]
            yield f"| {role}: system calls per event | {header} |"
            yield f"|---|{'---:|' * len(systems)}"
            for name, values in rows:
                if max(values) >= 0.05:
                    yield f"| `{name}` | {' | '.join(f'{v:.2f}' for v in values)} |"
            totals = [sum(results[s][0].get(role, {}).values()) for s in systems]
            yield f"| **all** | {' | '.join(f'**{v:.2f}**' for v in totals)} |"
            yield ""
    yield f"| CPU µs per event | {header} |"
    yield f"|---|{'---:|' * len(systems)}"
    for role in CPU_ROLES:
        yield f"| {role} | {' | '.join(f'{results[s][1][role]:.1f}' for s in systems)} |"
    for figure in ("p50-ms", "p99-ms"):
        if all(figure in results[s][1] for s in systems):
            yield f"| latency {figure[:3]}, ms | {' | '.join(f'{results[s][1][figure]:.3f}' for s in systems)} |"
    yield ""


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.syscalls", description=__doc__.splitlines()[0])
    parser.add_argument("--system", action="append", choices=sorted(NAMES),
                        help="what to measure (repeatable; default bus and floor)")
    parser.add_argument("--tree", action="append", type=Path, default=[],
                        help="also the master of another checkout (repeatable)")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (500)")
    parser.add_argument("--events", default="500,2500", help="the two event counts (500,2500)")
    parser.add_argument("--runs", type=int, default=3, help="CPU run pairs; the median is shown (3)")
    parser.add_argument("--no-strace", action="store_true", help="CPU only")
    parser.add_argument("--latency", type=float, default=0.0, metavar="S",
                        help="also p50/p99 send-to-receive latency over S seconds per system")
    parser.add_argument("--pin", action="store_true",
                        help="daemons on CPU 0, clients on CPU 1: where the scheduler puts each process "
                             "changes its wake-up cost, and so the comparison")
    args = parser.parse_args(argv)
    trace = not args.no_strace
    if trace and shutil.which("strace") is None:
        parser.error("strace is not installed (or pass --no-strace)")
    few, many = (int(n) for n in args.events.split(","))
    systems = [*(args.system or ("bus", "floor")), *(str(tree.resolve()) for tree in args.tree)]
    started = time.perf_counter()
    load_before = load_note()
    results = measure(systems, (few, many), args.rate, args.runs, trace, args.pin, args.latency)
    lines = [*_tables(results),
             f"{SIZE} B events, 1->1 at {args.rate:g}/s, runs of {few} and {many} events; host {load_before} "
             f"at the start, {load_note()} at the end; took {time.perf_counter() - started:.0f} s.", ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
