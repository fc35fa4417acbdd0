"""Failover benchmark traffic: numbered relays on every minion, and a subscriber on each master bus.

``bench.failover`` runs this module in a process of its own (``Traffic``),
so that neither its own work nor the master it kills slows the measurement:

    python -m bench.failovertraffic RATE LABEL=MASTER_CONFIG... -- MINION_CONFIG...

One thread per ``LABEL`` listens on that master's bus for ``failover/``
events and notes, per minion, ``(n, arrival, fired)`` (monotonic seconds:
CLOCK_MONOTONIC is one clock for every process on Linux). A listener whose
master dies ends there (``ended`` says how). One thread fires
``failover/<id>`` ``{"n", "t"}`` on each minion ``RATE`` times a second
through ``fire_master``, ``n`` counting from 0 per minion. Commands on
stdin, one answer line each: ``fire`` (start firing; the start time),
``count`` (events seen per label), ``halt`` (stop firing; the counts fired)
and ``stop`` (once every fired event was seen somewhere, or nothing new came
for ``QUIET`` s: everything as JSON).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from eventbus import config, event
from eventbus.errors import EventBusError

ROOT = Path(__file__).resolve().parent.parent
TAG = "failover/"
QUIET = 2.0        # s without a new arrival after which ``stop`` gives up waiting for the rest
STOP_LIMIT = 15.0  # s ``stop`` waits at most


class Traffic:
    """The traffic process, driven from the benchmark (see the module doc)."""

    def __init__(self, rate: float, masters: dict[str, Path], minions: Sequence[Path]) -> None:
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: nothing it logs can block it
        argv = [sys.executable, "-m", "bench.failovertraffic", repr(rate),
                *(f"{label}={path}" for label, path in masters.items()), "--", *(str(p) for p in minions)]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        self._answer()  # "ready": every listener is connected

    def _answer(self) -> str:
        assert self.proc.stdout is not None
        answer = self.proc.stdout.readline()
        if not answer:
            self.log.seek(0)
            raise RuntimeError(f"the traffic process died:\n{self.log.read()[-3000:].decode(errors='replace')}")
        return answer.strip()

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self._answer())

    def stop(self) -> dict:
        result = self.ask("stop")
        self.proc.wait(10)
        self.log.close()
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class _Running:
    """The process's threads: a listener per master, one firing thread."""

    def __init__(self, rate: float, masters: dict[str, str], minion_configs: list[str]) -> None:
        self.interval = 1.0 / rate
        self.minions = [(config.load(config.MinionConfig, Path(path)).id, config.client_config(path))
                        for path in minion_configs]
        self.fired = {minion_id: 0 for minion_id, _ in self.minions}
        self.seen: dict[str, dict[str, list[tuple[int, float, float]]]] = {
            label: {minion_id: [] for minion_id, _ in self.minions} for label in masters}
        self.ended: dict[str, str] = {}
        self.errors: list[str] = []
        self.last_arrival = time.monotonic()
        self.firing = threading.Event()
        self.listening = threading.Event()
        self.listening.set()
        buses = {label: event.get_event("master", opts=config.client_config(path)) for label, path in masters.items()}
        for label, bus in buses.items():
            if not bus.connect_pub(10.0):
                raise RuntimeError(f"no answer from the master bus {label}")
        self.listeners = [threading.Thread(target=self._listen, args=(label, bus), daemon=True)
                          for label, bus in buses.items()]
        self.firer = threading.Thread(target=self._guard, args=(self._fire,), daemon=True)
        for thread in self.listeners:
            thread.start()

    def _guard(self, target: Any) -> None:
        try:
            target()
        except BaseException as exc:  # reported with the results: a failed thread must fail the benchmark
            self.errors.append(repr(exc))

    def fire(self) -> float:
        started = time.monotonic()
        self.firing.set()
        self.firer.start()
        return started

    def _fire(self) -> None:
        handles = [(minion_id, f"{TAG}{minion_id}", event.MinionEvent(opts=opts, listen=False))
                   for minion_id, opts in self.minions]
        fired = self.fired
        try:
            due = time.monotonic()
            while self.firing.is_set():
                for minion_id, tag, handle in handles:
                    n = fired[minion_id]
                    if not handle.fire_master({"n": n, "t": time.monotonic()}, tag):
                        raise RuntimeError(f"fire_master on {minion_id} timed out at n={n}")
                    fired[minion_id] = n + 1
                due += self.interval
                time.sleep(max(0.0, due - time.monotonic()))
        finally:
            for _, _, handle in handles:
                handle.destroy()

    def _listen(self, label: str, bus: Any) -> None:
        seen = self.seen[label]
        get = bus.get_event
        try:
            while self.listening.is_set():
                item = get(wait=0.2, tag=TAG, full=True)
                if item is None:
                    continue
                now = time.monotonic()
                data = item["data"]
                body = data["data"]
                seen[data["id"]].append((body["n"], now, body["t"]))
                self.last_arrival = now
            self.ended[label] = "stopped"
        except EventBusError as exc:  # the benchmark killed this master: its stream ends here
            self.ended[label] = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:
            self.ended[label] = f"{type(exc).__name__}: {exc}"
            self.errors.append(f"listener {label}: {exc!r}")
        finally:
            bus.destroy()

    def halt(self) -> dict[str, int]:
        self.firing.clear()
        if self.firer.is_alive():
            self.firer.join(10)
        return dict(self.fired)

    def covered(self) -> bool:
        for minion_id, fired in self.fired.items():
            ns = set()
            for seen in self.seen.values():
                ns.update(n for n, _, _ in seen[minion_id])
            if len(ns) < fired:
                return False
        return True

    def stop(self) -> dict:
        self.halt()
        start = time.monotonic()
        while (not self.covered() and time.monotonic() - self.last_arrival < QUIET
               and time.monotonic() - start < STOP_LIMIT and not self.errors):
            time.sleep(0.05)
        self.listening.clear()
        for thread in self.listeners:
            thread.join(10)
        return {"fired": self.fired, "seen": self.seen, "ended": self.ended, "errors": self.errors}


def main(argv: list[str]) -> None:
    """Serve ``Traffic``'s commands on stdin until ``stop``."""
    split = argv.index("--")
    rate, masters, minions = float(argv[0]), dict(a.split("=", 1) for a in argv[1:split]), argv[split + 1:]
    sys.setswitchinterval(0.001)  # the listeners' turns come soon after the firing thread's
    running = _Running(rate, masters, minions)
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "fire":
            answer: Any = running.fire()
        elif command == "count":
            answer = {label: sum(len(v) for v in seen.values()) for label, seen in running.seen.items()}
            answer["errors"] = running.errors
        elif command == "halt":
            answer = running.halt()
        elif command == "stop":
            print(json.dumps(running.stop()), flush=True)
            return
        else:
            answer = f"unknown command {command!r}"
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    if "--" not in sys.argv[2:] or len(sys.argv) < 4:
        sys.exit("usage: python -m bench.failovertraffic RATE LABEL=MASTER_CONFIG... -- MINION_CONFIG...")
    main(sys.argv[1:])
