"""Many simulated CURVE minions in one process: ``python -m bench.fleetclient`` (driven by ``bench.fleet``).

Each link is a DEALER with a CURVE key pair and a minion id of its own,
speaking the real link protocol (``eventbus.daemon.link.protocol``): hello,
a ping every heartbeat, relayed events with contiguous seqs (one batch in
flight, resent from the master's ``last`` after a welcome or a ``resend``),
hello again on ``who``; it answers nothing else. As the minion, a link
says hello when its CURVE handshake succeeds (its socket's monitor tells)
and sends only while connected (``IMMEDIATE``); it reconnects with
``RECONNECT_IVL`` a random 100..1100 ms per link, doubling up to
``RECONNECT_IVL_MAX`` 5 s. One context holds them all and one epoll waits
on their ``ZMQ_FD``s (``zmq_poll`` over thousands of sockets costs as much
for one ready socket as for all): a socket is read when its fd signals,
and looked at after each send on it, which may take that signal.

Commands come as lines on stdin (the first line is the JSON set-up):
``connect``, ``relay SECONDS RATE``, ``burst PINGS``, ``stats``, ``quit``; each answer is one
JSON line on stdout.
"""
from __future__ import annotations

import heapq
import json
import os
import random
import select
import sys
import time
import zmq

from bench.procs import raise_fd_limit
from eventbus.daemon.link import protocol

_MAX_BATCH = protocol.MAX_BATCH_EVENTS
BURST_WINDOW = 20  # pings a link has on the way at once in a burst


class Link:
    """One simulated minion's link and relay state."""

    __slots__ = ("index", "minion_id", "socket", "fd", "accepted", "result", "generated", "sent", "acked",
                 "in_flight", "flight_at", "burst")

    def __init__(self, index: int, minion_id: str, sock: zmq.Socket) -> None:
        self.index = index
        self.minion_id = minion_id
        self.socket = sock
        self.fd: int = sock.getsockopt(zmq.FD)
        self.accepted = False
        self.result = ""
        self.generated = 0  # events made so far: seqs 1..generated
        self.sent = 0  # highest seq sent (in flight or acked)
        self.acked = 0  # highest seq the master acknowledged
        self.in_flight = False
        self.flight_at = 0.0
        self.burst = 0  # pings still to send in a burst (one more on each pong)


def event_frame(minion_id: str, seq: int) -> bytes:
    """The relay frame of a simulated minion's event number ``seq``: tag ``fleet/ev``, data ``{"n": seq}``."""
    return b"fleet/ev\x00\x81\xa1n" + (b"\xcf" + seq.to_bytes(8, "big"))


class Fleet:
    """The links of one worker process, their timers and counters."""

    def __init__(self, setup: dict) -> None:
        self.setup = setup
        self.heartbeat: float = setup["heartbeat"]
        self.rng = random.Random(setup.get("seed", 0))
        self.context = zmq.Context(io_threads=1)
        # Per link: its DEALER, the monitor's two ends.
        self.context.set(zmq.MAX_SOCKETS, 3 * len(setup["ids"]) + 64)
        self.links: list[Link] = []
        self.by_fd: dict[int, tuple[Link, zmq.Socket | None]] = {}  # fd: (link, its monitor or None: its DEALER)
        self.epoll = select.epoll()
        self.touched: set[int] = set()
        self.timers: list[tuple[float, int, int]] = []  # (due, link index, kind)
        self.counts = {"handshakes": 0, "hellos": 0, "whos": 0, "pongs": 0, "welcomes": 0, "resends": 0, "timeouts": 0}
        self.relay_until = 0.0
        self.rate = 1.0

    # -- set-up ---------------------------------------------------------------------

    def connect(self) -> None:
        """Open every link and say hello on each (queued until its connection is up)."""
        server_key = self.setup["server_key"].encode()
        address = f"tcp://127.0.0.1:{self.setup['port']}"
        now = time.monotonic()
        for index, minion_id in enumerate(self.setup["ids"]):
            public, secret = zmq.curve_keypair()
            sock = self.context.socket(zmq.DEALER)
            sock.curve_serverkey = server_key
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.RECONNECT_IVL, self.rng.randint(100, 1100))
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            sock.connect(address)
            link = Link(index, minion_id, sock)
            self.links.append(link)
            self.by_fd[link.fd] = (link, None)
            self.by_fd[monitor.getsockopt(zmq.FD)] = (link, monitor)
            self.epoll.register(link.fd, select.EPOLLIN)
            self.epoll.register(monitor.getsockopt(zmq.FD), select.EPOLLIN)
            # A ZMQ_FD signals changes after the last look: look once to arm it.
            self.touched.update((link.fd, monitor.getsockopt(zmq.FD)))
            heapq.heappush(self.timers, (now + self.rng.uniform(0, self.heartbeat), index, 0))

    def _ping(self, link: Link) -> None:
        try:
            link.socket.send_multipart(protocol.PING_MESSAGE, zmq.NOBLOCK)
            self.touched.add(link.fd)
        except zmq.Again:
            pass

    def burst(self, count: int) -> None:
        """Each link sends ``count`` more pings, ``BURST_WINDOW`` at a time: traffic through every connection."""
        for link in self.links:
            link.burst = count
            for _ in range(min(BURST_WINDOW, link.burst)):
                link.burst -= 1
                self._ping(link)

    def _hello(self, link: Link) -> None:
        try:
            link.socket.send_multipart(protocol.hello(link.minion_id), zmq.NOBLOCK)
            self.touched.add(link.fd)
            self.counts["hellos"] += 1
        except zmq.Again:  # not connected (any more): the next handshake says hello
            pass

    def _connected(self, monitor: zmq.Socket, link: Link) -> None:
        """The link's handshake succeeded: a new connection, so hello (as the minion does)."""
        while monitor.poll(0):
            monitor.recv_multipart()
            self.counts["handshakes"] += 1
            link.accepted = False
            link.in_flight = False
            self._hello(link)

    # -- relay ----------------------------------------------------------------------

    def start_relay(self, seconds: float, rate: float) -> None:
        """Each link makes ``rate`` events a second for ``seconds``, at a phase of its own."""
        now = time.monotonic()
        self.relay_until = now + seconds
        self.rate = rate
        for link in self.links:
            heapq.heappush(self.timers, (now + self.rng.uniform(0, 1.0 / rate), link.index, 1))

    def _pump(self, link: Link, now: float) -> None:
        """Send the next batch when none is in flight."""
        if link.in_flight or not link.accepted or link.sent >= link.generated:
            return
        first = link.sent + 1
        last = min(link.generated, link.sent + _MAX_BATCH)
        frames = [event_frame(link.minion_id, seq) for seq in range(first, last + 1)]
        try:
            link.socket.send_multipart(protocol.events(first, link.acked, frames), zmq.NOBLOCK)
        except zmq.Again:
            return
        self.touched.add(link.fd)
        link.sent = last
        link.in_flight = True
        link.flight_at = now

    # -- messages from the master ---------------------------------------------------

    def _receive(self, link: Link, now: float) -> None:
        """Read the link until it is empty (its fd signals again only after that)."""
        while True:
            try:
                frames = link.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = protocol.parse(frames)
            except Exception:  # a bench client counts what it cannot read, and goes on
                self.counts["unreadable"] = self.counts.get("unreadable", 0) + 1
                continue
            kind = message.kind
            if kind == protocol.ACK:
                link.acked = max(link.acked, message.value)
                link.in_flight = False
                self._pump(link, now)
            elif kind == protocol.PONG:
                self.counts["pongs"] += 1
                if link.burst > 0:
                    link.burst -= 1
                    self._ping(link)
            elif kind == protocol.WELCOME:
                self.counts["welcomes"] += 1
                link.result = message.value["result"]
                link.accepted = link.result == "accept"
                if link.accepted:
                    last = message.value["last"]
                    link.acked = max(link.acked, last)
                    link.sent = link.acked
                    link.in_flight = False
                    self._pump(link, now)
            elif kind == protocol.RESEND:
                self.counts["resends"] += 1
                link.sent = link.acked = max(link.acked, message.value)
                link.in_flight = False
                self._pump(link, now)
            elif kind == protocol.WHO:
                self.counts["whos"] += 1
                link.accepted = False
                link.in_flight = False
                self._hello(link)

    # -- the loop -------------------------------------------------------------------

    def _timers(self, now: float) -> None:
        timers = self.timers
        heartbeat = self.heartbeat
        while timers and timers[0][0] <= now:
            due, index, kind = heapq.heappop(timers)
            link = self.links[index]
            if kind == 0:  # heartbeat
                heapq.heappush(timers, (due + heartbeat, index, 0))
                self._ping(link)
                if link.in_flight and now - link.flight_at > 2 * heartbeat:
                    # The batch went with a lost connection: send again from the last ack (the master de-duplicates).
                    self.counts["timeouts"] += 1
                    link.in_flight = False
                    link.sent = link.acked
                    self._pump(link, now)
            elif due < self.relay_until:  # one more event
                heapq.heappush(timers, (due + 1.0 / self.rate, index, 1))
                link.generated += 1
                self._pump(link, now)

    def stats(self) -> dict:
        links = self.links
        return {"links": len(links), "accepted": sum(link.accepted for link in links),
                "pending": sum(link.result == "pend" for link in links),
                "generated": sum(link.generated for link in links), "acked": sum(link.acked for link in links),
                "relaying": self.relay_until > time.monotonic(), **self.counts}

    def run(self, commands: int, pending: str = "") -> None:
        """Serve the links until ``quit`` or the end of the commands (file descriptor ``commands``)."""
        self.epoll.register(commands, select.EPOLLIN)
        by_fd = self.by_fd
        pending = self._commands(pending)
        if pending is None:
            return
        swept = time.monotonic()
        while True:
            timeout = 0.1
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            ready = self.epoll.poll(0 if self.touched else timeout)
            now = time.monotonic()
            for fd, _ in ready:
                found = by_fd.get(fd)
                if found is None:
                    chunk = os.read(commands, 65536).decode()
                    if not chunk:
                        return
                    pending = self._commands(pending + chunk)
                    if pending is None:
                        return
                elif found[1] is None:
                    self._receive(found[0], now)
                else:
                    self._connected(found[1], found[0])
            self._timers(time.monotonic())
            if now - swept > 1.0:  # a safety net: every socket looked at once a second
                swept = now
                self.touched.update(by_fd)
            while self.touched:
                link, monitor = by_fd[self.touched.pop()]
                if not (monitor or link.socket).getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    continue
                if monitor is None:
                    self._receive(link, time.monotonic())
                else:
                    self._connected(monitor, link)

    def _commands(self, text: str) -> str | None:
        """Run the whole lines of ``text``; what is left of it, or ``None`` after ``quit``."""
        while "\n" in text:
            line, text = text.split("\n", 1)
            if not self._command(line.split()):
                return None
        return text

    def _command(self, words: list[str]) -> bool:
        if not words:
            return True
        if words[0] == "connect":
            self.connect()
        elif words[0] == "burst":
            self.burst(int(words[1]))
        elif words[0] == "relay":
            self.start_relay(float(words[1]), float(words[2]))
        elif words[0] == "quit":
            return False
        print(json.dumps(self.stats()), flush=True)
        return True

    def close(self) -> None:
        self.epoll.close()
        for _, monitor in self.by_fd.values():
            if monitor is not None:
                monitor.close(0)
        for link in self.links:
            link.socket.close(0)
        self.context.term()


def main() -> int:
    raise_fd_limit()
    received = b""
    while b"\n" not in received:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            return 1
        received += chunk
    line, rest = received.split(b"\n", 1)
    fleet = Fleet(json.loads(line))
    try:
        fleet.run(0, rest.decode())
    finally:
        fleet.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
