"""Instructions per event of the Python floor's three processes, as ``bench.callgrind`` counts the bus's.

``python -m bench.callgrind_floor [--events 300,2300] [--rate 100] [--size 100]``

The floor (``python -m bench.reference --python``, see ``bench.floor``) and
its bare clients (a PUSH with a reused msgpack Packer, a SUB that splits the
tag and unpacks) each run under callgrind for two event counts, paced as
``bench.callgrind`` paces the bus; the difference of the totals over the
difference of the events is one event's cost. What the bus spends per event
beyond these figures is its own work. A bare SUB cannot tell when it is
live, so the publisher sends warm-up events until the subscriber has one;
each process's figure is divided by the events it passed, warm-up included.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from bench.callgrind import ROLES, _total, _valgrind
from bench.measure import wait_until
from bench.procs import short_tmpdir

HERE = Path(__file__).resolve().parent.parent

SUBSCRIBER = """
import sys
from bench.reference import Subscriber
sub = Subscriber(sys.argv[1])
print("ready", flush=True)
got = 0
while True:
    event = sub.recv(60)
    if event is None:
        break
    got += 1
    if got == 1:
        print("live", flush=True)
    if event[0] == "bench/end":
        break
print("received", got, flush=True)
sub.close()
"""

PUBLISHER = """
import select, sys, time
from bench.reference import Publisher
count, rate, size = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
pub = Publisher(sys.argv[1])
data = {"i": -1, "x": "x" * max(0, size - 40)}
sent = 0
while not select.select([sys.stdin], [], [], 0.01)[0]:
    pub.send(data, "bench/warm")
    sent += 1
sys.stdin.readline()
start = time.monotonic()
for i in range(count):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    data["i"] = i
    pub.send(data, "bench/load/event")
time.sleep(0.05)
pub.send({"i": -2}, "bench/end")
print("sent", sent + count + 1, flush=True)
pub.close()
"""


def run_once(events: int, rate: float, size: int) -> tuple[dict[str, int], dict[str, int]]:
    """(Ir, events passed) of the floor daemon, its publisher and its subscriber, ``events`` paced ones."""
    root = short_tmpdir("ebcf")
    python = sys.executable
    outs = {role: root / f"{role}.out" for role in ROLES}
    daemon = subprocess.Popen(_valgrind(outs["daemon"], [python, "-m", "bench.reference", "--python", str(root)]),
                              cwd=HERE, stdout=subprocess.DEVNULL, stderr=open(root / "daemon.log", "w"))
    try:
        def bound() -> bool:
            if daemon.poll() is not None:
                raise RuntimeError(f"the floor exited: {(root / 'daemon.log').read_text()[-2000:]}")
            return (root / "in.ipc").exists() and (root / "out.ipc").exists()
        wait_until(bound, 300, "the floor under valgrind to bind")
        subscriber = subprocess.Popen(_valgrind(outs["subscriber"], [python, "-c", SUBSCRIBER, str(root)]),
                                      cwd=HERE, stdout=subprocess.PIPE, text=True)
        assert subscriber.stdout is not None
        if subscriber.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber did not get ready")
        publisher = subprocess.Popen(_valgrind(outs["publisher"], [python, "-c", PUBLISHER, str(root), str(events),
                                                                    str(rate), str(size)]),
                                     cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert publisher.stdin is not None and publisher.stdout is not None
        if subscriber.stdout.readline().strip() != "live":
            raise RuntimeError("the subscriber never got an event")
        publisher.stdin.write("go\n")
        publisher.stdin.flush()
        sent = publisher.stdout.readline().split()
        if publisher.wait(events / rate * 4 + 600) != 0 or sent[:1] != ["sent"]:
            raise RuntimeError("the publisher failed")
        received = subscriber.stdout.readline().split()
        subscriber.wait(600)
        if received[:1] != ["received"]:
            raise RuntimeError(f"the subscriber said {received}")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(300)
        except subprocess.TimeoutExpired:
            daemon.kill()
    try:
        passed = {"daemon": int(sent[1]), "publisher": int(sent[1]), "subscriber": int(received[1])}
        return {role: _total(out) for role, out in outs.items()}, passed
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(counts: tuple[int, int], rate: float, size: int) -> dict[str, float]:
    """Instructions per event of each role of the floor, from the difference of two runs."""
    (few, few_passed), (many, many_passed) = (run_once(count, rate, size) for count in counts)
    return {role: (many[role] - few[role]) / (many_passed[role] - few_passed[role]) for role in ROLES}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="300,2300", help="the two event counts (300,2300)")
    parser.add_argument("--rate", type=float, default=100.0, help="publisher pace, events/s (100)")
    parser.add_argument("--size", type=int, default=100, help="event size in bytes (100)")
    args = parser.parse_args(argv)
    few, many = (int(n) for n in args.events.split(","))
    started = time.perf_counter()
    result = measure((few, many), args.rate, args.size)
    print("| process | Python floor |")
    print("|---|---:|")
    for role in ROLES:
        print(f"| {role} | {result[role]:,.0f} |")
    print(f"\nInstructions per event (callgrind Ir), {args.size} B at {args.rate:g}/s, "
          f"runs of {few} and {many} events; took {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
