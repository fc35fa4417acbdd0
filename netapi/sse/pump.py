"""The pump: one thread writes every plain-HTTP stream's records straight to its socket.

Once a stream's headers and first chunk are out, its request thread hands the socket to the pump and
sleeps until the stream ends; per hub flush the pump writes each stream's new bytes (rendered by the hub)
as HTTP chunks with non-blocking writes, sends keepalives, ends expired streams and sees hang-ups (EOF).
What is due when lives in ``eventbus.netapi.sse.streamstate``, shared with the TLS path
(``eventbus.netapi.sse.events``), whose streams keep their own thread. Why: docs/api.md, How it scales.
"""
from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from cherrypy.process import plugins, wspbus

from eventbus.refusallog import Complaints
from eventbus.netapi.sse.hub import Hub
from eventbus.netapi.sse.stream import KEEPALIVE
from eventbus.netapi.sse.streamstate import StreamState

log = logging.getLogger(__name__)

HOUSEKEEPING = 1.0
CRLF = b"\r\n"


def raw_socket(rfile: Any) -> socket.socket | None:
    """The plain TCP socket under a cheroot request's input file, or ``None`` (TLS, or not cheroot)."""
    sock = getattr(getattr(getattr(rfile, "rfile", None), "raw", None), "_sock", None)
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    return sock


class Pumped:
    """One stream the pump writes: its socket and what is unsent, around the shared ``StreamState``."""

    __slots__ = ("sock", "fd", "state", "out", "done", "reason", "writing")

    def __init__(self, sock: socket.socket, state: StreamState) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = state
        self.out = b""
        self.done = threading.Event()
        self.reason = ""
        self.writing = False


class Pump(plugins.SimplePlugin):
    """The writer thread of every adopted stream, started and stopped with CherryPy's engine."""

    def __init__(self, bus: wspbus.Bus, hub: Hub) -> None:
        super().__init__(bus)
        self.hub = hub
        self.complaints = Complaints(log)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._arrivals: deque[Pumped] = deque()
        self._arrival_lock = threading.Lock()
        self._streams: dict[int, Pumped] = {}
        self._thread: threading.Thread | None = None
        self._running = False
        hub.on_wake(self.wake)

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="stream-pump", daemon=True)
        self._thread.start()

    start.priority = 70  # type: ignore[attr-defined]

    def stop(self) -> None:
        with self._arrival_lock:
            self._running = False
        self.wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    stop.priority = 10  # type: ignore[attr-defined]

    # -- request threads -------------------------------------------------------------------

    def adopt(self, pumped: Pumped) -> None:
        """Take over writing a stream; ``pumped.done`` is set when it ended (``pumped.reason`` says why)."""
        with self._arrival_lock:
            if not self._running:
                pumped.reason = "closed"
                pumped.done.set()
                return
            os.set_blocking(pumped.fd, False)
            self._arrivals.append(pumped)
        self.wake()

    def wake(self) -> None:
        """Have the pump look at every stream (new records, new arrivals, shutdown)."""
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # a wake-up is already pending

    # -- the pump thread -------------------------------------------------------------------------

    def _run(self) -> None:
        select = self._selector.select
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        try:
            while self._running and not self.hub.closed:
                woken = False
                for key, mask in select(HOUSEKEEPING):
                    pumped = key.data
                    if pumped is None:
                        woken = True
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except BlockingIOError:
                            pass
                        continue
                    if mask & selectors.EVENT_READ:
                        self._on_readable(pumped)
                    if mask & selectors.EVENT_WRITE and pumped.fd in self._streams:
                        self._send(pumped)
                        if not pumped.out and pumped.fd in self._streams:
                            self._feed(pumped)  # the client caught up: what came meanwhile goes now
                while self._arrivals:
                    arrived = self._arrivals.popleft()
                    self._streams[arrived.fd] = arrived
                    self._selector.register(arrived.fd, selectors.EVENT_READ, arrived)
                    woken = True
                if woken:
                    for pumped in list(self._streams.values()):
                        self._feed(pumped)
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING
                    self._housekeeping(now)
        finally:
            with self._arrival_lock:
                self._running = False  # no stream is adopted after this
            for pumped in list(self._streams.values()):
                self._end(pumped, "closed")
            while self._arrivals:
                self._end(self._arrivals.popleft(), "closed")

    def _feed(self, pumped: Pumped) -> None:
        if pumped.out:
            return  # the client has not taken the last write yet; its backlog grows in the hub
        data = self.hub.take(pumped.state.stream)
        if data is None:
            self._drop(pumped)
        elif data:
            pumped.out = b"%x\r\n%b\r\n" % (len(data), data)
            self._send(pumped)

    def _send(self, pumped: Pumped) -> None:
        try:
            sent = os.write(pumped.fd, pumped.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end(pumped, "left")
            return
        pumped.out = pumped.out[sent:]
        if pumped.out:
            if not pumped.writing:
                pumped.writing = True
                self._selector.modify(pumped.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, pumped)
            return
        pumped.state.wrote()
        if pumped.writing:
            pumped.writing = False
            self._selector.modify(pumped.fd, selectors.EVENT_READ, pumped)

    def _on_readable(self, pumped: Pumped) -> None:
        try:
            data = pumped.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._end(pumped, "left")  # the client hung up

    def _housekeeping(self, now: float) -> None:
        wall = time.time()
        for pumped in list(self._streams.values()):
            state = pumped.state
            if pumped.out:
                if self.hub.lag(state.stream) > self.hub.capacity:
                    self._drop(pumped)
                continue
            if state.expired(wall):
                self._end(pumped, "expired")
            elif state.keepalive_due(now):
                pumped.out = b"%x\r\n%b\r\n" % (len(KEEPALIVE), KEEPALIVE)
                self._send(pumped)

    def _drop(self, pumped: Pumped) -> None:
        state = pumped.state
        self.complaints.refuse("slow", f"dropped the stream of {state.user} from {state.peer}: {self.hub.behind()}")
        try:
            pumped.sock.shutdown(socket.SHUT_RDWR)  # a half-written chunk must not look like a clean end
        except OSError:
            pass
        self._end(pumped, "dropped")

    def _end(self, pumped: Pumped, reason: str) -> None:
        if self._streams.pop(pumped.fd, None) is not None:
            try:
                self._selector.unregister(pumped.fd)
            except (KeyError, ValueError):
                pass
        if not pumped.done.is_set():
            try:
                os.set_blocking(pumped.fd, pumped.sock.gettimeout() is None)  # as the socket object expects
            except OSError:
                pass
            pumped.reason = reason
            pumped.done.set()
