"""Test kit for a rogue accepted minion: its misbehaviour, its flood, and honest minions' timed traffic.

``Rogue`` is ``RawMinion`` (a raw CURVE DEALER with its own key) plus what
a minion with an accepted key could send that no honest one does. ``Flood``
and ``HonestTraffic`` each run this module in a process of their own, so
that neither the flood's work nor the test's attacks slow the measurement:

    python -m tests.roguekit flood MASTER_CONFIG KEY_DIR MINION_ID      # until SIGTERM, then one JSON line
    python -m tests.roguekit traffic MASTER_CONFIG MINION_CONFIG...     # commands on stdin (HonestTraffic)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import zmq

from eventbus.daemon.link import protocol
from eventbus import config, event
from tests.linkkit import RawMinion

ROOT = Path(__file__).resolve().parent.parent
FLOOD_BATCH = protocol.MAX_BATCH_EVENTS  # events per flood message: the most the master takes in one


def event_frame(tag: str, data: Any) -> bytes:
    """A minion's ``tag NUL msgpack`` relay frame, built by hand (so it may be wrong on purpose)."""
    return tag.encode() + b"\x00" + msgpack.packb(data, use_bin_type=True)


def malformed_messages() -> list[list[bytes]]:
    """Link messages the master must refuse: cut, unknown, garbage, or the master's own kinds."""
    return [
        [b""],
        [b"gossip", b"x"],
        [protocol.EVENTS],
        [protocol.EVENTS, b"\x00\x01"],
        [protocol.FIRED],
        [protocol.FIRED, b"\x01\x02\x03"],
        [protocol.HELLO, b"\xc1\xc1"],
        [protocol.HELLO, msgpack.packb([1, 2])],
        [protocol.HELLO, msgpack.packb({"id": "a/b*"})],
        protocol.ack(1),
        protocol.welcome("accept", 0, 1.0),
        protocol.fire(1, event_frame("x", {})),
        protocol.resend(1),
        protocol.WHO_MESSAGE,
        protocol.PONG_MESSAGE,
    ]


class _MasterSettings(NamedTuple):
    """What ``RawMinion`` reads of a master node, for a process that only has its config file."""

    settings: config.MasterConfig


class Rogue(RawMinion):
    """An accepted minion's key in the hands of someone who does not play by the rules."""

    def sync(self, timeout: float = 10.0) -> None:
        """Return once the master has handled everything sent before (it answers a connection in order).

        The ping goes again each second: one sent just before the master cut the connection is lost with it.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.send(protocol.PING_MESSAGE)
            try:
                self.expect(protocol.PONG, min(1.0, max(0.0, deadline - time.monotonic())))
                return
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise

    def drain(self) -> list[protocol.Message]:
        """Every message waiting from the master, without blocking."""
        got = []
        while self.socket.poll(0):
            got.append(protocol.parse(self.socket.recv_multipart()))
        return got

    def batch(self, first: int, floor: int, frames: list[bytes], timeout: float = 10.0) -> protocol.Message:
        """Send an events message and return the master's answer to it (ack or resend)."""
        self.drain()
        self.send(protocol.events(first, floor, frames))
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise AssertionError(f"no answer to a batch from {first} within {timeout} s")
            if message.kind in (protocol.ACK, protocol.RESEND):
                return message


class Flood:
    """The rogue's flood: a process sending full event batches on the rogue's key as fast as the master takes them."""

    def __init__(self, master_config: Path, key_dir: Path, minion_id: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.roguekit", "flood", str(master_config), str(key_dir), minion_id],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> dict:
        """Stop flooding; what the flood sent: ``{"messages", "events"}``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=15)
        if self.proc.returncode != 0:
            raise AssertionError(f"the flood process failed ({self.proc.returncode}):\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])


def flood(master_config: str, key_dir: str, minion_id: str) -> dict:
    """Send batches of new events as fast as the link takes them, until SIGTERM; follow the master's acks."""
    # At the lowest CPU priority: a real rogue floods from its own machine, so its own work (building and
    # encrypting the flood) should not be what slows the daemons on a small shared test host.
    os.nice(19)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = config.load(config.MasterConfig, Path(master_config))
    rogue = Rogue(_MasterSettings(settings), minion_id, Path(key_dir))  # type: ignore[arg-type]
    rogue.socket.setsockopt(zmq.SNDHWM, 20)  # back-pressure: the master's pace, not a queue in memory
    frames = [event_frame("rogue/flood", {"n": n, "pad": "f" * 40}) for n in range(FLOOD_BATCH)]
    sent = {"messages": 0, "events": 0}
    try:
        welcome = rogue.hello()
        following = welcome.value["last"] + 1
        while not stop.is_set():
            for message in rogue.drain():
                if message.kind == protocol.ACK:
                    following = max(following, message.value + 1)
                elif message.kind == protocol.RESEND:
                    following = message.value + 1
            if not rogue.socket.poll(100, zmq.POLLOUT):
                continue
            rogue.socket.send_multipart(protocol.events(following, 0, frames))
            following += FLOOD_BATCH
            sent["messages"] += 1
            sent["events"] += FLOOD_BATCH
    finally:
        rogue.close()
    return sent


class HonestTraffic:
    """Honest minions' paced relay, timed until the master bus has each event, from a process of its own.

    ``python -m tests.roguekit traffic MASTER_CONFIG MINION_CONFIG...`` fires
    ``honest/<id>`` with ``{"n", "t", "phase"}`` on every minion each
    ``INTERVAL`` s (``fire_master``) and listens on the master bus, noting per
    minion the ``n`` seen in order and the latency ``now - t`` per phase, and
    keeping every other event but the rogue's flood (skipped unread). Its own
    process: the test's attack work must not hold the listener's interpreter.
    It answers one line per command line: ``phase NAME``, ``count PHASE`` and
    ``stop`` (every fired event seen or 15 s, then the results as JSON).
    """

    def __init__(self, master, minions) -> None:
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: nothing it logs can block it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.roguekit", "traffic", str(master.path), *(str(m.path) for m in minions)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            self.log.seek(0)
            raise AssertionError(f"the traffic process died:\n{self.log.read()[-3000:].decode(errors='replace')}")
        return answer.strip()

    def phase(self, name: str) -> None:
        """Stamp the events fired from now on with phase ``name``."""
        self._ask(f"phase {name}")

    def count(self, phase: str) -> int:
        """Events of ``phase`` seen on the master bus so far."""
        return int(self._ask(f"count {phase}"))

    def stop(self) -> dict:
        """Stop firing; what the traffic saw, once every fired event was seen (or 15 s passed).

        ``fired`` and ``seen`` (the n per minion), ``latency`` (s, per phase), ``others`` (every
        event but the honest ones and the flood), ``slowest`` ((latency, monotonic time seen, id, n)
        of the slowest events) and ``errors`` (of its threads).
        """
        result = json.loads(self._ask("stop"))
        self.proc.wait(10)
        self.log.close()
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def p99(values: list[float]) -> float:
    """The 99th percentile of at least 50 values."""
    assert len(values) >= 50, f"only {len(values)} values"
    return sorted(values)[int(len(values) * 0.99) - 1]


class _Traffic:
    """The traffic process's two threads: one fires, one listens (see ``HonestTraffic``)."""

    INTERVAL = 0.02

    def __init__(self, master_config: str, minion_configs: list[str]) -> None:
        self.phase = "before"
        self.minions = [(config.load(config.MinionConfig, Path(path)).id, config.client_config(path))
                        for path in minion_configs]
        self.fired = {minion_id: 0 for minion_id, _ in self.minions}
        self.seen: dict[str, list[int]] = {minion_id: [] for minion_id, _ in self.minions}
        self.latency: dict[str, list[float]] = {}
        self.others: list[dict] = []
        self.slowest: list[tuple[float, float, str, int]] = []  # (latency, when seen, id, n): what failures show
        self.errors: list[str] = []
        self.firing = threading.Event()
        self.listening = threading.Event()
        self.bus = event.get_event("master", opts=config.client_config(master_config))
        self.threads = [threading.Thread(target=self._guard, args=(self._listen,), daemon=True),
                        threading.Thread(target=self._guard, args=(self._fire,), daemon=True)]
        self.firing.set()
        self.listening.set()
        for thread in self.threads:
            thread.start()

    def _guard(self, target) -> None:
        try:
            target()
        except BaseException as exc:  # reported with the results: a failed thread must fail the test
            self.errors.append(repr(exc))

    def _fire(self) -> None:
        handles = [(minion_id, event.MinionEvent(opts=opts, listen=False)) for minion_id, opts in self.minions]
        try:
            due = time.monotonic()
            while self.firing.is_set():
                for minion_id, handle in handles:
                    n = self.fired[minion_id]
                    assert handle.fire_master({"n": n, "t": time.monotonic(), "phase": self.phase},
                                              f"honest/{minion_id}")
                    self.fired[minion_id] = n + 1
                due += self.INTERVAL
                time.sleep(max(0.0, due - time.monotonic()))
        finally:
            for _, handle in handles:
                handle.destroy()

    def _listen(self) -> None:
        get = self.bus.get_event
        while self.listening.is_set():
            item = get(wait=0.2, tag="(?!rogue/flood)", match_type="regex", full=True)
            if item is None:
                continue
            now = time.monotonic()
            tag, data = item["tag"], item["data"]
            if tag.startswith("honest/"):
                body = data["data"]
                self.seen[data["id"]].append(body["n"])
                self.latency.setdefault(body["phase"], []).append(now - body["t"])
                self.slowest.append((now - body["t"], now, data["id"], body["n"]))
                if len(self.slowest) > 400:
                    self.slowest = sorted(self.slowest, reverse=True)[:20]
            else:
                self.others.append(item)

    def stop(self) -> dict:
        self.firing.clear()
        self.threads[1].join(10)
        deadline = time.monotonic() + 15
        while (any(len(self.seen[m]) < n for m, n in self.fired.items()) and time.monotonic() < deadline
               and not self.errors):
            time.sleep(0.05)
        self.listening.clear()
        self.threads[0].join(10)
        self.bus.destroy()
        return {"fired": self.fired, "seen": self.seen, "latency": self.latency, "others": self.others,
                "slowest": sorted(self.slowest, reverse=True)[:20], "errors": self.errors}


def traffic(master_config: str, *minion_configs: str) -> None:
    """Serve ``HonestTraffic``'s commands on stdin until ``stop``."""
    sys.setswitchinterval(0.001)  # the listener's turn comes soon after the firing thread's
    running = _Traffic(master_config, list(minion_configs))
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "phase":
            running.phase = argument
            answer = "ok"
        elif command == "count":
            answer = str(len(running.latency.get(argument, [])))
        elif command == "stop":
            print(json.dumps(running.stop(), default=str), flush=True)
            return
        else:
            answer = f"unknown command {command!r}"
        print(answer, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "flood":
        print(json.dumps(flood(*sys.argv[2:])), flush=True)
    elif len(sys.argv) >= 4 and sys.argv[1] == "traffic":
        traffic(*sys.argv[2:])
    else:
        sys.exit("usage: python -m tests.roguekit flood MASTER_CONFIG KEY_DIR MINION_ID\n"
                 "       python -m tests.roguekit traffic MASTER_CONFIG MINION_CONFIG...")
