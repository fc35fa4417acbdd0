"""Instructions per event of the three processes of the 1->1 case, under valgrind's callgrind.

``python -m bench.callgrind [--tree DIR] [--events 300,2300] [--rate 100] [--size 100]``

Wall-clock figures on a shared machine are noisy; instruction counts are
not. The master daemon (journal on, its defaults), one subscriber
(``get_event``) and one publisher (``fire_event``) each run under callgrind
for two event counts; the difference of their totals divided by the
difference of the counts is the cost of one event, start-up and shut-down
cancelled out. The publisher is paced (``--rate``, default 100/s) so each
event is its own wake-up in every process: the low-rate path, which does not
depend on how events happen to batch. ``--tree`` runs another checkout's
code (e.g. a ``git worktree`` of the base commit, in either layout: see
``bench/codetree.py``) with this harness, for a before/after table;
``--keep DIR`` keeps the outputs for ``callgrind_annotate``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.codetree import eventbus_command, tree_env
from bench.measure import wait_until
from bench.procs import free_port, short_tmpdir

ROLES = ("daemon", "publisher", "subscriber")

SUBSCRIBER = """
import sys
from eventbus import config, event
opts = config.client_config(sys.argv[1])
count = int(sys.argv[2])
handle = event.get_event("master", sock_dir=opts["sock_dir"], opts=opts)
assert handle.connected, "no bus"
print("ready", flush=True)
got = 0
while got < count:
    if handle.get_event(wait=60, tag="bench/") is None:
        break
    got += 1
print("received", got, handle.lost, flush=True)
handle.destroy()
"""

PUBLISHER = """
import sys, time
from eventbus import config, event
opts = config.client_config(sys.argv[1])
count, rate, size = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
handle = event.get_event("master", sock_dir=opts["sock_dir"], opts=opts, listen=False)
data = {"i": 0, "x": "x" * max(0, size - 40)}
start = time.monotonic()
for i in range(count):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    data["i"] = i
    while not handle.fire_event(data, "bench/load/event"):
        pass
handle.destroy()
"""


def _valgrind(out: Path, argv: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}", *argv]


def _total(out: Path) -> int:
    """The Ir total of one callgrind output file."""
    text = out.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    if not found:
        raise RuntimeError(f"no instruction total in {out}")
    return int(found.group(1))


def run_once(tree: Path, events: int, rate: float, size: int, keep: Path | None = None) -> dict[str, int]:
    """Ir of the daemon, the publisher and the subscriber passing ``events`` events (outputs kept in ``keep``)."""
    import yaml
    from eventbus.bus import control
    from eventbus.errors import BusUnavailableError

    root = short_tmpdir("ebcg")
    env = tree_env(tree)
    python = sys.executable
    conf = root / "conf"
    conf.mkdir()
    (conf / "master").write_text(yaml.safe_dump({"root_dir": str(root), "sock_dir": "s", "log_level": "warning",
                                                 "publish_port": free_port(), "ret_port": free_port()}))
    config_file = str(conf / "master")
    outs = {role: root / f"{role}.out" for role in ROLES}
    daemon = subprocess.Popen(_valgrind(outs["daemon"], eventbus_command(tree, "master", "-c", str(conf))),
                              cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=open(root / "daemon.log", "w"))
    try:
        def answers() -> bool:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
            try:
                control.ping(root / "s", timeout=1.0)
                return True
            except BusUnavailableError:
                return False
        wait_until(answers, 300, "the daemon under valgrind to answer")
        subscriber = subprocess.Popen(_valgrind(outs["subscriber"], [python, "-c", SUBSCRIBER, config_file,
                                                                      str(events)]),
                                      cwd=tree, env=env, stdout=subprocess.PIPE, text=True)
        assert subscriber.stdout is not None
        if subscriber.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber did not get ready")
        publisher = subprocess.Popen(_valgrind(outs["publisher"], [python, "-c", PUBLISHER, config_file,
                                                                    str(events), str(rate), str(size)]),
                                     cwd=tree, env=env)
        if publisher.wait(events / rate * 4 + 600) != 0:
            raise RuntimeError("the publisher failed")
        line = subscriber.stdout.readline().split()
        subscriber.wait(600)
        if line[:2] != ["received", str(events)]:
            raise RuntimeError(f"the subscriber got {line}, not {events} events")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(300)
        except subprocess.TimeoutExpired:
            daemon.kill()
    try:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for role, out in outs.items():
                shutil.copy(out, keep / f"{tree.name}-{role}-{events}.out")
        return {role: _total(out) for role, out in outs.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(tree: Path, counts: tuple[int, int], rate: float, size: int,
            keep: Path | None = None) -> dict[str, float]:
    """Instructions per event of each role, from the difference of two runs."""
    # Byte-compile first: a module compiled in one run and loaded from its .pyc in the other skews the difference.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True, stdout=subprocess.DEVNULL)
    few = run_once(tree, counts[0], rate, size, keep)
    many = run_once(tree, counts[1], rate, size, keep)
    return {role: (many[role] - few[role]) / (counts[1] - counts[0]) for role in ROLES}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout whose code to measure (repeatable; default this one)")
    parser.add_argument("--events", default="300,2300", help="the two event counts (300,2300)")
    parser.add_argument("--rate", type=float, default=100.0, help="publisher pace, events/s (100)")
    parser.add_argument("--size", type=int, default=100, help="event size in bytes (100)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind outputs here (for callgrind_annotate)")
    args = parser.parse_args(argv)
    few, many = (int(n) for n in args.events.split(","))
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    started = time.perf_counter()
    results = {tree: measure(tree.resolve(), (few, many), args.rate, args.size, args.keep) for tree in trees}
    print(f"| process | {' | '.join(str(tree) for tree in trees)} |")
    print(f"|---|{'---:|' * len(trees)}")
    for role in ROLES:
        print(f"| {role} | {' | '.join(f'{results[tree][role]:,.0f}' for tree in trees)} |")
    print(f"\nInstructions per event (callgrind Ir), {args.size} B at {args.rate:g}/s, "
          f"runs of {few} and {many} events; took {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
