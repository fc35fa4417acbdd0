"""A small single-threaded reactor over zmq sockets, file descriptors and timers.

The bus's per-event path runs straight from one ``poll`` system call into a
socket handler, with nothing in between, which is what keeps the daemon's
CPU per event low.

It waits on each zmq socket's ``ZMQ_FD`` with the OS's ``poll``, not with
``zmq_poll``: ``zmq_poll`` makes two passes over every socket, each asking
its ``ZMQ_EVENTS`` with a system call of its own, so on a quiet bus a
wake-up cost two to three times the proxy's system calls. A ``ZMQ_FD``
only signals a change, though, and any operation on the socket may take
that signal. So a reader is one of two kinds:

- **shared** (the default): its readiness is asked (``ZMQ_EVENTS``) on every
  turn, so code anywhere may use the socket. This is ``zmq_poll``'s level
  semantics at one system call per socket and turn.
- **own** (``own=True``): the callback reads until the socket says it is
  empty, or returns ``True`` to be called again on the next turn; code that
  uses the socket outside its callback calls ``touched(sock)`` afterwards,
  and the loop asks its readiness before it sleeps. Code that uses a socket
  on every event, where a message may wait a little (the bus's subscriptions
  on the socket it publishes on), says ``touched(sock, lazy=True)`` instead,
  or calls ``toucher(sock)``'s result: the loop asks on the turn's end as
  well, but at most once every ``LAZY_LOOK`` seconds for all the uses
  meanwhile (a message waits at most that long).
"""
from __future__ import annotations

import functools
import heapq
import itertools
import logging
import select
import signal
import socket
import time
from typing import Any, Callable

import zmq
from zmq.backend import zmq_poll as _zmq_poll

log = logging.getLogger(__name__)

Callback = Callable[[], Any]
# Ints, not zmq's enum members: these go to zmq_poll on the per-event path.
_POLLIN = int(zmq.POLLIN)
_FD_IN = select.POLLIN | select.POLLERR | select.POLLHUP
# Longest sleep without a timer: the loop notices ``running = False`` set from outside within this.
MAX_SLEEP_MS = 1000
# Sockets touched lazily are asked on the first turn at least this long after the last look (at once on a
# quiet loop), so at most 1 / LAZY_LOOK times a second however many events pass.
LAZY_LOOK = 0.02
_LAZY_LOOK_MS = int(LAZY_LOOK * 1000)


class _Reader:
    __slots__ = ("callback", "socket", "ready", "own")

    def __init__(self, callback: Callback, sock: zmq.Socket | None, own: bool) -> None:
        self.callback = callback
        self.socket = sock
        self.ready = [(sock, _POLLIN)] if sock is not None else []  # zmq_poll's item list, made once
        self.own = own


class Loop:
    """Poll sockets and run timers until ``stop()`` or a registered signal."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._by_fd: dict[int, _Reader] = {}
        self._by_source: dict[Any, int] = {}
        self._shared: list[_Reader] = []
        self._touched: dict[int, _Reader] = {}
        self._lazy: dict[int, _Reader] = {}  # touched lazily: asked at most every LAZY_LOOK seconds
        self._again: dict[int, _Reader] = {}
        self.timers: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()
        self.running = False
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None

    def add_reader(self, source: Any, callback: Callback, own: bool = False) -> None:
        """Call ``callback`` whenever ``source`` (a zmq socket or an fd) is readable (see the module doc)."""
        if isinstance(source, zmq.Socket):
            fd, reader = source.getsockopt(zmq.FD), _Reader(callback, source, own)
        else:
            fd, reader = int(source), _Reader(callback, None, False)
        self._by_fd[fd] = reader
        self._by_source[source] = fd
        self._poll.register(fd, select.POLLIN)
        if reader.socket is not None:
            if own:
                # Messages may be queued already, their signal taken by an earlier operation (a connect, a
                # bind): asked once before the first sleep, after which the signal is the socket's own.
                self._touched[fd] = reader
            else:
                self._shared.append(reader)

    def remove_reader(self, source: Any) -> None:
        fd = self._by_source.pop(source, None)
        if fd is None:
            return
        reader = self._by_fd.pop(fd)
        self._poll.unregister(fd)
        if reader in self._shared:
            self._shared.remove(reader)
        self._touched.pop(fd, None)
        self._lazy.pop(fd, None)
        self._again.pop(fd, None)

    def touched(self, source: zmq.Socket, lazy: bool = False) -> None:
        """``source``, an own reader's socket, was used outside its callback: ask its readiness before sleeping
        (``lazy``: at most every ``LAZY_LOOK`` seconds, see the module doc)."""
        fd = self._by_source.get(source)
        if fd is not None:
            (self._lazy if lazy else self._touched)[fd] = self._by_fd[fd]

    def toucher(self, source: zmq.Socket) -> Callback:
        """``touched(source, lazy=True)`` for a socket used on every event: a call with no Python frame."""
        fd = self._by_source[source]
        return functools.partial(self._lazy.__setitem__, fd, self._by_fd[fd])

    def _look_lazy(self) -> None:
        """Ask each lazily touched socket whether a message waits."""
        lazy, by_fd = self._lazy, self._by_fd
        while lazy:
            fd, reader = lazy.popitem()
            if by_fd.get(fd) is reader and _zmq_poll(reader.ready, 0) and reader.callback():
                self._again[fd] = reader

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
        poll = self._poll.poll
        by_fd = self._by_fd
        shared = self._shared
        timers = self.timers
        lazy = self._lazy
        lazy_due = 0.0  # lazily touched sockets are asked on a turn from then on
        monotonic = time.monotonic
        busy = False  # a shared socket was readable last turn: it may hold more, look again at once
        while self.running:
            again = self._again
            if busy or again:
                timeout = 0
            else:
                timeout = MAX_SLEEP_MS
                if timers:
                    # Plain comparisons: min() and max() cost more than the rest of a quiet wake-up's turn.
                    delay = timers[0][0] - monotonic()
                    if delay < 1.0:
                        timeout = int(delay * 1000) + 1 if delay > 0 else 0
                if lazy and timeout > _LAZY_LOOK_MS:
                    timeout = _LAZY_LOOK_MS
            fired = poll(timeout)
            if again:
                self._again = {}
                for fd, reader in again.items():
                    if reader.callback():
                        self._again[fd] = reader
            for fd, _ in fired:
                reader = by_fd.get(fd)
                if reader is None or (reader.socket is not None and not reader.own):
                    continue  # a shared socket is asked below
                if reader.callback() and reader.own:
                    self._again[fd] = reader
            if timers or lazy:
                now = monotonic()
                while timers and timers[0][0] <= now and self.running:
                    _, _, callback = heapq.heappop(timers)
                    callback()
                if lazy and now >= lazy_due:
                    lazy_due = now + LAZY_LOOK
                    self._look_lazy()
            busy = False
            for reader in shared:
                if _zmq_poll(reader.ready, 0):
                    reader.callback()
                    busy = True
            while self._touched:
                fd, reader = self._touched.popitem()
                if _zmq_poll(reader.ready, 0) and reader.callback():
                    self._again[fd] = reader

    def close(self) -> None:
        if self._wake_reader is not None:
            signal.set_wakeup_fd(-1)
            self.remove_reader(self._wake_reader.fileno())
            self._wake_reader.close()
            self._wake_writer.close()  # type: ignore[union-attr]
            self._wake_reader = self._wake_writer = None
