"""A rogue minion's flood and misbehaviour, and honest minions' timed traffic: each a process of its own.

``Flood``, ``Misbehaving`` and ``HonestTraffic`` each run this module in a
process of its own, so that neither the rogue's work nor the caller's slows
the measurement. The rogue minion test (``tests/integration/test_rogue_minion.py``)
and its benchmark (``bench.rogue``) drive them:

    python -m bench.roguetraffic flood MASTER_CONFIG KEY_DIR MINION_ID          # until SIGTERM, then one JSON line
    python -m bench.roguetraffic misbehave MASTER_CONFIG KEY_DIR MINION_ID OTHER  # until SIGTERM, then one JSON line
    python -m bench.roguetraffic traffic INTERVAL MASTER_CONFIG MINION_CONFIG...  # commands on stdin (HonestTraffic)
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
from typing import Any, NamedTuple, Sequence

import zmq

from bench.linkclient import Rogue, event_frame, malformed_messages
from eventbus import config, event
from eventbus.daemon.link import protocol

ROOT = Path(__file__).resolve().parent.parent
FLOOD_BATCH = protocol.MAX_BATCH_EVENTS  # events per flood message: the most the master takes in one
INTERVAL = 0.02  # s between two events of one honest minion (50 events/s each)


class _MasterSettings(NamedTuple):
    """What ``RawMinion`` reads of a master node, for a process that only has its config file."""

    settings: config.MasterConfig


def _rogue(master_config: str, key_dir: str, minion_id: str) -> Rogue:
    settings = config.load(config.MasterConfig, Path(master_config))
    return Rogue(_MasterSettings(settings), minion_id, Path(key_dir))  # type: ignore[arg-type]


class _RogueProcess:
    """A rogue's process (``flood`` or ``misbehave``): runs until ``stop``, then says what it sent."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.roguetraffic", *argv],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def pause(self) -> None:
        """Hold the process still (SIGSTOP) until ``resume``."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> dict:
        """Stop; what the process sent, as it counted it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)
        out, err = self.proc.communicate(timeout=15)
        if self.proc.returncode != 0:
            raise AssertionError(f"the {self.proc.args[3]} process failed ({self.proc.returncode}):\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])


class Flood(_RogueProcess):
    """The rogue's flood: a process sending full event batches on the rogue's key as fast as the master takes them.

    ``stop()`` returns ``{"messages", "events", "acked", "resent"}``: batches and events sent, and the
    master's answers (``ack``: taken; ``resend``: refused as a gap the rogue made).
    """

    def __init__(self, master_config: Path, key_dir: Path, minion_id: str) -> None:
        super().__init__("flood", str(master_config), str(key_dir), minion_id)


class Misbehaving(_RogueProcess):
    """The rogue's other misbehaviour, round after round, until ``stop`` (see ``Misbehaviour``)."""

    def __init__(self, master_config: Path, key_dir: Path, minion_id: str, other: str) -> None:
        super().__init__("misbehave", str(master_config), str(key_dir), minion_id, other)


def _until_sigterm() -> threading.Event:
    # At the lowest CPU priority: a real rogue works from its own machine, so its own work (building and
    # encrypting its messages) should not be what slows the daemons on a small shared host.
    os.nice(19)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def flood(master_config: str, key_dir: str, minion_id: str) -> dict:
    """Send batches of new events as fast as the link takes them, until SIGTERM; follow the master's acks."""
    stop = _until_sigterm()
    rogue = _rogue(master_config, key_dir, minion_id)
    rogue.socket.setsockopt(zmq.SNDHWM, 20)  # back-pressure: the master's pace, not a queue in memory
    frames = [event_frame("rogue/flood", {"n": n, "pad": "f" * 40}) for n in range(FLOOD_BATCH)]
    sent = {"messages": 0, "events": 0, "acked": 0, "resent": 0}
    try:
        welcome = rogue.hello()
        following = welcome.value["last"] + 1
        while not stop.is_set():
            for message in rogue.drain():
                if message.kind == protocol.ACK:
                    following = max(following, message.value + 1)
                    sent["acked"] += 1
                elif message.kind == protocol.RESEND:
                    following = message.value + 1
                    sent["resent"] += 1
            if not rogue.socket.poll(100, zmq.POLLOUT):
                continue
            rogue.socket.send_multipart(protocol.events(following, 0, frames))
            following += FLOOD_BATCH
            sent["messages"] += 1
            sent["events"] += FLOOD_BATCH
    finally:
        rogue.close()
    return sent


# Seqs far past anything a flood reaches: a batch there with floor just below is new (the protocol lets a
# minion say it dropped everything before), so each round gets seqs of its own while the flood goes on.
JUMP = 2 ** 40
ROUND_INTERVAL = 1.0  # s from one round of misbehaviour to the next
FIRE_JOBS = 64  # fire job ids the rogue acknowledges each round, whichever were sent to others


class Misbehaviour:
    """One round of every kind of misbehaviour but the flood, each message a kind the master refuses and logs."""

    def __init__(self, rogue: Rogue, other: str, max_event_size: int) -> None:
        self.rogue = rogue
        self.other = other
        self.jumps = 0
        self.messages = 0
        forbidden = ("salt/auth", "salt/key", "salt/presence/present", "salt/netapi/hook/x",
                     f"salt/minion/{other}/start", f"salt/minion/{other}/x")
        self.bad_events = [event_frame(tag, {"forged": True}) for tag in forbidden] + [
            b"no-nul-here", b"rogue/bad\x00\xc1", event_frame("rogue/list", [1, 2]),
            event_frame("rogue/big", {"forged": True, "pad": "x" * max_event_size})]
        self.oversize_batches = [
            [event_frame("rogue/many", {"n": n}) for n in range(protocol.MAX_BATCH_EVENTS + 1)],
            [event_frame("rogue/many", {"pad": "x" * 20_000})] * (protocol.MAX_BATCH_BYTES // 20_000 + 2)]
        # A frame ZeroMQ itself refuses (over max_event_size + 4 kB): it drops the connection, which reconnects.
        self.too_big = [protocol.EVENTS, protocol.BATCH_HEADER.pack(1, 0), b"x" * (max_event_size + 8192)]

    def send(self, frames: list[bytes]) -> None:
        self.rogue.send(frames)
        self.messages += 1

    def batch(self, first: int, floor: int, frames: list[bytes]) -> protocol.Message:
        self.messages += 1
        return self.rogue.batch(first, floor, frames)

    def fresh(self, frames: list[bytes]) -> protocol.Message:
        """Send ``frames`` at new seqs of the rogue's stream (past the flood); the master's answer."""
        self.jumps += 1
        first = JUMP * self.jumps
        return self.batch(first, first - 1, frames)

    def round(self) -> None:
        for message in malformed_messages():
            self.send(message)
        self.send(protocol.events(2 ** 64 - 1, 2 ** 64 - 2, [event_frame("rogue/wrap", {"n": 1})] * 2))
        self.fresh(self.bad_events)
        for frames in self.oversize_batches:
            self.send(protocol.events(JUMP, JUMP - 1, frames))
        # Relay, report a spool head past it, replay below that head.
        self.jumps += 1
        first = JUMP * self.jumps
        marked = [event_frame("rogue/replay", {"n": n}) for n in range(3)]
        self.batch(first, first - 1, marked)
        head = first + 10 ** 9
        self.batch(head + 1, head, [event_frame("rogue/replay", {"n": 3})])
        for floor in range(3):
            self.batch(first, floor, marked)
        # Claim another minion's id, relay as it and acknowledge fire jobs as it; then come back as itself.
        self.send(protocol.hello(self.other))
        self.rogue.expect(protocol.WELCOME)
        self.send(protocol.events(JUMP * 99, JUMP * 99 - 1, [event_frame(f"salt/minion/{self.other}/x", {})]))
        for job in range(1, FIRE_JOBS + 1):
            self.send(protocol.fired(job))
        self.send(protocol.hello(self.rogue.minion_id))
        self.rogue.expect(protocol.WELCOME)
        for job in range(1, FIRE_JOBS + 1):
            self.send(protocol.fired(job))
        self.send(self.too_big)
        self.rogue.sync(timeout=15)


def misbehave(master_config: str, key_dir: str, minion_id: str, other: str) -> dict:
    """Rounds of ``Misbehaviour``, one a ``ROUND_INTERVAL``, until SIGTERM; the rounds and messages sent."""
    stop = _until_sigterm()
    settings = config.load(config.MasterConfig, Path(master_config))
    rogue = _rogue(master_config, key_dir, minion_id)
    rounds = 0
    try:
        rogue.hello()
        acts = Misbehaviour(rogue, other, settings.max_event_size)
        due = time.monotonic()
        while not stop.is_set():
            acts.round()
            rounds += 1
            due += ROUND_INTERVAL
            stop.wait(max(0.0, due - time.monotonic()))
    finally:
        rogue.close()
    return {"rounds": rounds, "messages": acts.messages}


class HonestTraffic:
    """Honest minions' paced relay, timed until the master bus has each event, from a process of its own.

    ``python -m bench.roguetraffic traffic INTERVAL MASTER_CONFIG MINION_CONFIG...``
    fires ``honest/<id>`` with ``{"n", "t", "phase"}`` on every minion each
    ``INTERVAL`` s (``fire_master``) and listens on the master bus, noting per
    minion the ``n`` seen in order and, per phase, the latency ``now - t`` and
    ``t``; it keeps every other event but the rogue's flood (skipped unread).
    It answers one line per command line: ``phase NAME``, ``count PHASE`` and
    ``stop`` (every fired event seen or 15 s, then the results as JSON).
    """

    def __init__(self, master: Any, minions: Sequence[Any], interval: float = INTERVAL) -> None:
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: nothing it logs can block it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.roguetraffic", "traffic", repr(interval), str(master.path),
             *(str(m.path) for m in minions)],
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

        ``fired`` and ``seen`` (the n per minion), ``latency`` (s, per phase), ``fired_at`` (each
        of those events' monotonic send time, per phase), ``others`` (every event but the honest
        ones and the flood), ``slowest`` ((latency, monotonic time seen, id, n) of the slowest
        events) and ``errors`` (of its threads).
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


class _Traffic:
    """The traffic process's two threads: one fires, one listens (see ``HonestTraffic``)."""

    def __init__(self, interval: float, master_config: str, minion_configs: list[str]) -> None:
        self.interval = interval
        self.phase = "before"
        self.minions = [(config.load(config.MinionConfig, Path(path)).id, config.client_config(path))
                        for path in minion_configs]
        self.fired = {minion_id: 0 for minion_id, _ in self.minions}
        self.seen: dict[str, list[int]] = {minion_id: [] for minion_id, _ in self.minions}
        self.latency: dict[str, list[float]] = {}
        self.fired_at: dict[str, list[float]] = {}
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
        except BaseException as exc:  # reported with the results: a failed thread must fail the caller
            self.errors.append(repr(exc))

    def _fire(self) -> None:
        handles = [(minion_id, event.MinionEvent(opts=opts, listen=False)) for minion_id, opts in self.minions]
        try:
            due = time.monotonic()
            while self.firing.is_set():
                for minion_id, handle in handles:
                    n = self.fired[minion_id]
                    # ``t`` for the listener's clock, ``w`` (wall clock) for the master journal's time.
                    assert handle.fire_master({"n": n, "t": time.monotonic(), "w": time.time(),
                                               "phase": self.phase}, f"honest/{minion_id}")
                    self.fired[minion_id] = n + 1
                due += self.interval
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
                self.fired_at.setdefault(body["phase"], []).append(body["t"])
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
        return {"fired": self.fired, "seen": self.seen, "latency": self.latency, "fired_at": self.fired_at,
                "others": self.others, "slowest": sorted(self.slowest, reverse=True)[:20], "errors": self.errors}


def traffic(interval: str, master_config: str, *minion_configs: str) -> None:
    """Serve ``HonestTraffic``'s commands on stdin until ``stop``."""
    sys.setswitchinterval(0.001)  # the listener's turn comes soon after the firing thread's
    running = _Traffic(float(interval), master_config, list(minion_configs))
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
    elif len(sys.argv) == 6 and sys.argv[1] == "misbehave":
        print(json.dumps(misbehave(*sys.argv[2:])), flush=True)
    elif len(sys.argv) >= 5 and sys.argv[1] == "traffic":
        traffic(*sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.roguetraffic flood MASTER_CONFIG KEY_DIR MINION_ID\n"
                 "       python -m bench.roguetraffic misbehave MASTER_CONFIG KEY_DIR MINION_ID OTHER\n"
                 "       python -m bench.roguetraffic traffic INTERVAL MASTER_CONFIG MINION_CONFIG...")
