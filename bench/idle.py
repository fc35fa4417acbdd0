"""What an idle installation costs: ``python -m bench.idle``.

An event bus runs on every host and is quiet most of the time, so what its
daemons cost while nothing happens is paid everywhere. This benchmark starts
the whole sample installation as ``make run`` does (``eventbus.cli.devrun``
on a copy of ``conf/``: a master with the sample reactor rule, a minion, the
forwarder with its file broker and the REST API, on free ports), lets it
settle, then reads each process's CPU (all threads, nanoseconds from
``/proc/PID/task/TID/schedstat``) and how often its threads were woken, over
the same window as the references: the Python floor
(``bench.reference --python``, a Python loop asleep in ``poll``) and the bare
``zmq.proxy``, both idle.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import yaml

from bench.measure import load_note, thread_schedstat, wait_until
from bench.procs import Daemon, free_port, short_tmpdir
from bench.systems import running_reference

CONF = Path(__file__).resolve().parent.parent / "conf"
CONFIG_FILES = ("master", "minion", "api", "forward")
# The installation's daemons, by a word of their command line.
PARTS = {"master": "eventbus master", "reactor": "eventbus.daemon.reactor", "minion": "eventbus minion",
         "forwarder": "eventbus forward", "REST API": "eventbus api"}


def progress(message: str) -> None:
    print(f"idle: {message}", file=sys.stderr, flush=True)


def _sample_config(root: Path) -> Path:
    """``conf/`` copied under ``root`` with ports of its own (the defaults may be taken on this host)."""
    config_dir = root / "conf"
    config_dir.mkdir()
    publish_port, ret_port, api_port = free_port(), free_port(), free_port()
    ports = {"master": {"publish_port": publish_port, "ret_port": ret_port},
             "minion": {"publish_port": publish_port, "ret_port": ret_port}, "api": {"port": api_port}}
    for name in CONFIG_FILES:
        keys = yaml.safe_load((CONF / name).read_text()) or {}
        keys.update(ports.get(name, {}))
        (config_dir / name).write_text(yaml.safe_dump(keys, sort_keys=False))
    return config_dir


def _daemons(pid: int) -> dict[str, int]:
    """The installation's daemons among ``pid``'s descendants (the reactor is the master's child): name -> pid."""
    found: dict[str, int] = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            found.update(_daemons(int(child)))
        except OSError:
            continue  # gone meanwhile
        found.update({part: int(child) for part, word in PARTS.items() if word in command})
    return found


def _usage(pid: int) -> tuple[float, int]:
    """CPU seconds and times run of all of ``pid``'s threads so far."""
    threads = thread_schedstat(pid).values()
    return sum(seconds for seconds, _ in threads), sum(runs for _, runs in threads)


def measure(settle: float, seconds: float) -> list[str]:
    """The table's rows: each process's CPU ms per second and wake-ups per second, and the installation's."""
    root = short_tmpdir("ebi")
    config_dir = _sample_config(root)
    installation = Daemon([sys.executable, "-m", "eventbus.cli.devrun", str(config_dir)], root / "devrun.log",
                          cwd=CONF.parent, name="make run")
    try:
        with running_reference() as (proxy, _), running_reference(python=True) as (floor, _):
            progress("starting the sample installation (eventbus.cli.devrun on a copy of conf/)")
            installation.start()
            wait_until(lambda: (installation.check_alive(), "eventbus is running" in installation.log)[-1], 90,
                       "the installation to be running")
            pids = _daemons(installation.pid)
            if set(pids) != set(PARTS):
                raise RuntimeError(f"the installation runs {sorted(pids)}, not {sorted(PARTS)}")
            progress(f"settling for {settle:g} s, then {seconds:g} s of measuring")
            time.sleep(settle)
            watched = {**pids, "Python floor (reference)": floor.pid, "bare zmq.proxy (reference)": proxy.pid}
            before = {name: _usage(pid) for name, pid in watched.items()}
            started = time.monotonic()
            time.sleep(seconds)
            spent = time.monotonic() - started
            after = {name: _usage(pid) for name, pid in watched.items()}
            installation.check_alive()
    finally:
        installation.stop()
        shutil.rmtree(root, ignore_errors=True)
    figures = {name: ((after[name][0] - before[name][0]) / spent * 1000, (after[name][1] - before[name][1]) / spent)
               for name in watched}
    floor_cpu = figures["Python floor (reference)"][0]
    rows = []
    for name, (cpu, wakeups) in figures.items():
        rows.append(f"| {name} | {cpu:.2f} | {cpu / 10:.3f}% | {wakeups:.1f} | ×{cpu / floor_cpu:.1f} |")
    total_cpu = sum(figures[name][0] for name in PARTS)
    total_wakeups = sum(figures[name][1] for name in PARTS)
    rows.append(f"| **the installation, all five** | **{total_cpu:.2f}** | **{total_cpu / 10:.3f}%** | "
                f"**{total_wakeups:.1f}** | ×{total_cpu / floor_cpu:.1f} |")
    return rows


def main(argv: Sequence[str] | None = None) -> str:
    """Run the idle benchmark; print and return its Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start before measuring (10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds measured (30)")
    args = parser.parse_args(argv)
    load_before = load_note()
    rows = measure(args.settle, args.seconds)
    lines = [f"## An idle installation ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"`python -m bench.idle`)", "",
             "| process | CPU, ms per second | of one core | threads woken per second | ÷ the Python floor |",
             "|---|---:|---:|---:|---:|", *rows, "",
             f"Host: {load_before} at the start, {load_note()} at the end; {args.seconds:g} s measured after "
             f"{args.settle:g} s of settling.", ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
