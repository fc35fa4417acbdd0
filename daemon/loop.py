"""A small single-threaded reactor over zmq sockets, file descriptors and timers.

The bus's per-event path runs straight from ``poll`` into a socket handler,
with nothing in between, which is what keeps the daemon's CPU per event low.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import signal
import socket
import time
from typing import Any, Callable

import zmq

log = logging.getLogger(__name__)

Callback = Callable[[], Any]
# An int, not zmq's enum member: the poller passes it to zmq_poll on every wake-up.
_POLLIN = int(zmq.POLLIN)


class Loop:
    """Poll sockets and run timers until ``stop()`` or a registered signal."""

    def __init__(self) -> None:
        self.poller = zmq.Poller()
        self.readers: dict[Any, Callback] = {}
        self.timers: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()
        self.running = False
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None

    def add_reader(self, source: Any, callback: Callback) -> None:
        """Call ``callback`` whenever ``source`` (a zmq socket or an fd) is readable."""
        self.readers[source] = callback
        self.poller.register(source, _POLLIN)

    def remove_reader(self, source: Any) -> None:
        if self.readers.pop(source, None) is not None:
            self.poller.unregister(source)

    def call_later(self, delay: float, callback: Callback) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self._order), callback))

    def call_every(self, interval: float, callback: Callback) -> None:
        """Run ``callback`` every ``interval`` seconds (first run after one interval)."""
        def tick() -> None:
            self.call_later(interval, tick)
            callback()
        self.call_later(interval, tick)

    def stop_on_signals(self, *signums: int) -> None:
        """Stop the loop (promptly, even mid-poll) on any of ``signums``."""
        self._wake_reader, self._wake_writer = socket.socketpair()
        for end in (self._wake_reader, self._wake_writer):
            end.setblocking(False)
        signal.set_wakeup_fd(self._wake_writer.fileno(), warn_on_full_buffer=False)

        def handle(signum: int, _frame: Any) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            self.running = False

        for signum in signums:
            signal.signal(signum, handle)
        self.add_reader(self._wake_reader.fileno(), self._drain_wakeups)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_reader.recv(512):  # type: ignore[union-attr]
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        self.running = False

    def run(self) -> None:
        self.running = True
        poll = self.poller.poll
        readers = self.readers
        timers = self.timers
        monotonic = time.monotonic
        while self.running:
            timeout = 1000
            if timers:
                # Plain comparisons: min() and max() cost more than the rest of a quiet wake-up's turn.
                delay = timers[0][0] - monotonic()
                if delay < 1.0:
                    timeout = int(delay * 1000) + 1 if delay > 0 else 0
            for source, _ in poll(timeout):
                callback = readers.get(source)
                if callback is not None:
                    callback()
            now = monotonic()
            while timers and timers[0][0] <= now and self.running:
                _, _, callback = heapq.heappop(timers)
                callback()

    def close(self) -> None:
        if self._wake_reader is not None:
            signal.set_wakeup_fd(-1)
            self._wake_reader.close()
            self._wake_writer.close()  # type: ignore[union-attr]
            self._wake_reader = self._wake_writer = None

