"""The master-bus side of ``bench.fleet``, a process each: ``python -m bench.fleetbus count|probe SOCK_DIR``.

- ``count``: a real subscriber (``eventbus.event.MasterEvent``) on the
  master bus counting the fleet's relayed events (``fleet/ev``) per minion:
  new, duplicate, out of order; and the largest ``salt/presence/present``.
- ``probe``: the local round trip: ``fire_event`` an event on the master
  bus every ``--interval`` s and time until the same handle receives it.

Each reads commands as lines on stdin (``stats``; ``stop``: print the
final figures and exit) and answers with one JSON line on stdout.
"""
from __future__ import annotations

import argparse
import json
import select
import sys
import time
from typing import Sequence

from eventbus.event import MasterEvent

PROBE_TAG = "fleet/rt"
PROBE_TIMEOUT = 5.0


def _command() -> str | None:
    """A command line from stdin if one waits ('' at its end), else ``None``."""
    if not select.select([0], [], [], 0)[0]:
        return None
    line = sys.stdin.readline()
    return line.strip() if line else "stop"


def count(sock_dir: str) -> int:
    handle = MasterEvent(sock_dir)
    handle.subscribe("fleet/ev")
    handle.subscribe("salt/presence/present")
    expected: dict[str, int] = {}
    figures = {"events": 0, "new": 0, "duplicates": 0, "out_of_order": 0, "presence_events": 0,
               "presence_largest": 0, "presence_bytes": 0}
    print(json.dumps(figures), flush=True)  # listening
    last_look = 0.0
    try:
        while True:
            event = handle.get_event(wait=0.2, full=True)
            if event is not None:
                data = event["data"]
                if event["tag"] == "fleet/ev":
                    figures["events"] += 1
                    minion_id, seq = data["id"], data["data"]["n"]
                    want = expected.get(minion_id, 1)
                    if seq == want:
                        figures["new"] += 1
                        expected[minion_id] = seq + 1
                    elif seq < want:
                        figures["duplicates"] += 1
                    else:
                        figures["out_of_order"] += 1
                        figures["new"] += 1
                        expected[minion_id] = seq + 1
                elif event["tag"] == "salt/presence/present":
                    figures["presence_events"] += 1
                    present = data.get("present", [])
                    if len(present) >= figures["presence_largest"]:
                        figures["presence_largest"] = len(present)
                        figures["presence_bytes"] = len(json.dumps(present))
            now = time.monotonic()
            if now - last_look < 0.1 and event is not None:
                continue
            last_look = now
            command = _command()
            if command is None:
                continue
            figures["lost"] = handle.lost
            print(json.dumps(figures), flush=True)
            if command == "stop":
                return 0
    finally:
        handle.destroy()


def probe(sock_dir: str, interval: float) -> int:
    handle = MasterEvent(sock_dir)
    handle.subscribe(PROBE_TAG)
    samples: list[tuple[float, float]] = []  # (wall time sent, round trip s; -1: not back in time)
    print(json.dumps({"samples": 0}), flush=True)  # listening
    number = 0
    try:
        while True:
            number += 1
            sent_at = time.time()
            start = time.perf_counter()
            handle.fire_event({"i": number}, PROBE_TAG)
            latency = -1.0
            while time.perf_counter() - start < PROBE_TIMEOUT:
                event = handle.get_event(wait=PROBE_TIMEOUT, tag=PROBE_TAG)
                if event is not None and event.get("i") == number:
                    latency = time.perf_counter() - start
                    break
            samples.append((sent_at, latency))
            command = _command()
            if command == "stop":
                print(json.dumps({"samples": samples}), flush=True)
                return 0
            if command is not None:
                print(json.dumps({"samples": len(samples)}), flush=True)
            time.sleep(max(0.0, interval - (time.perf_counter() - start)))
    finally:
        handle.destroy()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleetbus", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("count", "probe"))
    parser.add_argument("sock_dir")
    parser.add_argument("--interval", type=float, default=0.02, help="probe: seconds between round trips")
    args = parser.parse_args(argv)
    return count(args.sock_dir) if args.role == "count" else probe(args.sock_dir, args.interval)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
