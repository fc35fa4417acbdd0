"""Publisher and subscriber processes for the bus and the reference, and the crew that steers them.

Each client is its own process (spawned, so it shares nothing with the
benchmark) and uses only the public surface a user would: for the bus
``eventbus.config.client_config`` and ``eventbus.event.get_event`` /
``fire_event`` / ``get_event``; for the reference, its bare sockets. The
benchmark talks to them over pipes: a trial arms the subscribers, lets the
publishers go, then collects what every subscriber saw.

Events carry ``k`` (trial), ``p`` (publisher), ``i`` (its counter), ``t``
(``time.monotonic_ns`` at send: CLOCK_MONOTONIC, the same clock in every
process on Linux) and ``x`` (padding to the requested size).
"""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable

import msgpack

from bench.measure import Pacer

TAG = "bench/load/event"
TAG_MATCH = "bench/"
# A subscriber ends a trial this long after its last event once it knows how many to expect.
QUIET = 1.5  # longer than a listener's quiet-bus head check (eventbus.bus.inbox.HEAD_CHECK_EVERY)
WARM_TAG_K = -1


@dataclass(frozen=True)
class Target:
    """What clients connect to: ``kind`` "bus" (``where`` = master config file) or "reference" (proxy dir)."""

    kind: str
    where: str


# -- the two systems' clients, behind the same three calls -------------------------------


def open_publisher(target: Target) -> tuple[Callable[[dict, str], int], Callable[[], None]]:
    """(send(data, tag) -> retries, close) for ``target``; send blocks on back-pressure."""
    if target.kind == "reference":
        from bench.reference import Publisher

        publisher = Publisher(target.where)
        push = publisher.send

        def send_reference(data: dict, tag: str) -> int:
            push(data, tag)
            return 0
        return send_reference, publisher.close

    from eventbus import config, event

    opts = config.client_config(target.where)
    handle = event.get_event("master", sock_dir=opts["sock_dir"], opts=opts, listen=False)
    fire = handle.fire_event

    def send_bus(data: dict, tag: str) -> int:
        retries = 0
        while not fire(data, tag):  # not handed over within the timeout: the user retries
            retries += 1
        return retries
    return send_bus, handle.destroy


def open_subscriber(target: Target) -> tuple[Callable[[float], dict | None], Callable[[], int], Callable[[], None]]:
    """(recv(timeout) -> data or None, lost() -> events the client knows it missed, close)."""
    if target.kind == "reference":
        from bench.reference import Subscriber

        subscriber = Subscriber(target.where)
        pull = subscriber.recv

        def recv_reference(timeout: float) -> dict | None:
            got = pull(timeout)
            return None if got is None else got[1]
        return recv_reference, lambda: 0, subscriber.close

    from eventbus import config, event

    opts = config.client_config(target.where)
    handle = event.get_event("master", sock_dir=opts["sock_dir"], opts=opts)
    if not handle.connected:
        raise RuntimeError(f"no bus answered on {opts['sock_dir']}")
    get = handle.get_event

    def recv_bus(timeout: float) -> dict | None:
        return get(wait=timeout, tag=TAG_MATCH)
    return recv_bus, lambda: handle.lost, handle.destroy


def event_data(size: int) -> dict:
    """A data dict whose event (tag, NUL, msgpack data) packs to about ``size`` bytes."""
    data = {"k": 1, "p": 1, "i": 100_000, "t": time.monotonic_ns(), "x": ""}
    overhead = len(TAG) + 1 + len(msgpack.packb(data))
    pad = max(0, size - overhead)
    while pad and len(TAG) + 1 + len(msgpack.packb({**data, "x": "x" * pad})) > size:
        pad -= 1
    data["x"] = "x" * pad
    return data


# -- worker processes -----------------------------------------------------------------


def publisher_main(target: Target, index: int, conn: Connection) -> None:
    """A publisher process: on ``go`` send a paced (or flat-out) run of events, report what it sent."""
    send, close = open_publisher(target)
    conn.send(("ready",))
    mono = time.monotonic_ns
    try:
        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "warm":
                data = {"k": WARM_TAG_K, "p": index, "i": 0, "t": 0}
                while not conn.poll(0.005):
                    send(data, TAG)
                conn.recv()
                conn.send(("warm-done",))
                continue
            _, trial, count, rate, size, max_seconds = command
            data = event_data(size)
            data.update(k=trial, p=index)
            pacer = Pacer(rate / 1.0 if rate else None)
            wait = pacer.wait if rate else None
            retries = 0
            start = time.perf_counter()
            deadline = start + max_seconds
            i = 0
            while i < count:
                if wait is not None:
                    wait(i)
                data["i"] = i
                data["t"] = mono()
                retries += send(data, TAG)
                i += 1
                if not i & 63 and time.perf_counter() > deadline:
                    break
            conn.send(("done", i, time.perf_counter() - start, retries, mono()))
    finally:
        close()


def subscriber_main(target: Target, index: int, conn: Connection) -> None:
    """A subscriber process: during a trial, count, order-check and (optionally) time every event."""
    recv, lost, close = open_subscriber(target)
    conn.send(("ready",))
    try:
        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "stall":
                conn.send(("stalled",))
                conn.recv()  # never read the bus until told to stop
                return
            if command[0] == "warm":
                while True:
                    data = recv(0.05)
                    if data is not None and data["k"] == WARM_TAG_K:
                        break
                conn.send(("warm-ok",))
                continue
            conn.send(_trial(recv, lost, conn, command[1], command[2]))
    finally:
        close()


def _trial(recv: Callable[[float], dict | None], lost: Callable[[], int], conn: Connection,
           trial: int, timed: bool) -> tuple:
    conn.send(("armed",))
    mono = time.monotonic_ns
    expected: int | None = None
    received = gaps = disorder = stale = 0
    following: dict[int, int] = {}
    latencies: list[int] = []
    first = last = 0
    lost_before = lost()
    idle_since: float | None = None
    while True:
        data = recv(0.05)
        if data is None:
            if expected is None and conn.poll():
                expected = conn.recv()[1]
            if expected is not None:
                if received >= expected:
                    break
                now = time.perf_counter()
                if idle_since is None:
                    idle_since = now
                elif now - idle_since > QUIET:
                    break
            continue
        idle_since = None
        if data["k"] != trial:
            stale += 1
            continue
        now_ns = mono()
        publisher, i = data["p"], data["i"]
        want = following.get(publisher, 0)
        if i != want:
            if i > want:
                gaps += i - want
            else:
                disorder += 1
        following[publisher] = i + 1
        received += 1
        if timed:
            latencies.append(now_ns - data["t"])
        if not first:
            first = now_ns
        last = now_ns
        if expected is None:
            if not received & 1023 and conn.poll():
                expected = conn.recv()[1]
        elif received >= expected:
            break
    return ("seen", {"received": received, "gaps": gaps, "disorder": disorder, "stale": stale,
                     "lost_counter": lost() - lost_before, "first_ns": first, "last_ns": last,
                     "latencies_ns": latencies})


# -- the coordinator's side -----------------------------------------------------------


@dataclass
class TrialResult:
    """What one trial did: events sent, when, and what each subscriber saw."""

    sent: int
    seconds: float
    retries: int
    seen: list[dict]
    ended_ns: int = 0  # CLOCK_MONOTONIC when the last publisher finished (0: unknown)

    @property
    def rate(self) -> float:
        """Events per second all publishers together handed to the bus."""
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def lossless(self) -> bool:
        return all(s["received"] == self.sent and s["disorder"] == 0 for s in self.seen)

    @property
    def missing(self) -> int:
        return max((self.sent - s["received"] for s in self.seen), default=0)

    @property
    def disorder(self) -> int:
        return sum(s["disorder"] for s in self.seen)

    @property
    def lag(self) -> float:
        """Seconds from the last publisher's end to the slowest subscriber's last event (0 when unknown).

        Listeners that fell behind fetch what they missed from the daemon and
        still get everything, late: the lag tells a subscriber that kept pace
        from one that caught up afterwards.
        """
        last = max((s["last_ns"] for s in self.seen), default=0)
        return max(0.0, (last - self.ended_ns) / 1e9) if self.ended_ns and last else 0.0

    @property
    def delivered_rate(self) -> float:
        """The slowest subscriber's receive rate over its own first-to-last event."""
        rates = [s["received"] / ((s["last_ns"] - s["first_ns"]) / 1e9)
                 for s in self.seen if s["last_ns"] > s["first_ns"]]
        return min(rates, default=0.0)


class Crew:
    """``publishers`` and ``subscribers`` client processes on one target, steered trial by trial."""

    def __init__(self, target: Target, publishers: int, subscribers: int, stalled: int = 0) -> None:
        self.target = target
        self.trial_number = 0
        spawn = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []
        self.pubs = [self._start(spawn, publisher_main, i) for i in range(publishers)]
        self.subs = [self._start(spawn, subscriber_main, i) for i in range(subscribers)]
        self.stalled = [self._start(spawn, subscriber_main, subscribers + i) for i in range(stalled)]
        for conn in self.pubs + self.subs + self.stalled:
            self._expect(conn, "ready", 30)
        for conn in self.stalled:
            conn.send(("stall",))
            self._expect(conn, "stalled", 10)

    def _start(self, spawn: Any, main: Callable, index: int) -> Connection:
        ours, theirs = spawn.Pipe()
        process = spawn.Process(target=main, args=(self.target, index, theirs), daemon=True)
        process.start()
        self.processes.append(process)
        return ours

    def _expect(self, conn: Connection, word: str, timeout: float) -> tuple:
        if not conn.poll(timeout):
            raise RuntimeError(f"a {self.target.kind} client did not say {word!r} within {timeout:g} s")
        message = conn.recv()
        if message[0] != word:
            raise RuntimeError(f"a {self.target.kind} client said {message[0]!r}, expected {word!r}")
        return message

    def warm(self) -> None:
        """Flow events until every subscriber has one (the reference's subscriptions join late)."""
        for conn in self.subs:
            conn.send(("warm",))
        self.pubs[0].send(("warm",))
        for conn in self.subs:
            self._expect(conn, "warm-ok", 30)
        self.pubs[0].send(("enough",))
        self._expect(self.pubs[0], "warm-done", 30)

    def trial(self, size: int, rate: float | None, seconds: float, timed: bool = False,
              count: int | None = None) -> TrialResult:
        """Publish for about ``seconds`` at ``rate`` events/s in total (``None``: flat out).

        ``count`` caps the events each publisher sends.
        """
        self.trial_number += 1
        for conn in self.subs:
            conn.send(("trial", self.trial_number, timed))
        for conn in self.subs:
            self._expect(conn, "armed", 10)
        per_publisher = rate / len(self.pubs) if rate else None
        if count is None:
            count = int(per_publisher * seconds) if per_publisher else 1 << 62
        for conn in self.pubs:
            conn.send(("go", self.trial_number, count, per_publisher, size, seconds * 1.5 if rate else seconds))
        done = [self._expect(conn, "done", seconds * 3 + 30) for conn in self.pubs]
        sent = sum(d[1] for d in done)
        for conn in self.subs:
            conn.send(("expect", sent))
        seen = [self._expect(conn, "seen", 120)[1] for conn in self.subs]
        return TrialResult(sent, max(d[2] for d in done), sum(d[3] for d in done), seen, max(d[4] for d in done))

    def close(self) -> None:
        for conn in self.pubs + self.subs + self.stalled:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()

    def __enter__(self) -> "Crew":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
