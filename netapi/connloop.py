"""The gate: the API server's connection loop, in cheroot's place, handing a worker thread only whole requests.

One selector thread accepts, reads without blocking until ``eventbus.netapi.limits`` says head and body are
in, answers 431/414/413/408 and 503 itself, and does TLS handshakes; a slow client costs a registered
socket, never a thread. Why and the figures: docs/api.md, Hostile clients.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from typing import Any

from cheroot.makefile import MakeFile

from eventbus.netapi import limits
from eventbus.netapi.connstate import Draining, Handshake, Held, close_quietly, error_response, read_some, send_now

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 5.0
PENDING_PER_ADDRESS = 128
MAX_PENDING = 8192
# Bytes held for unfinished requests in all; past it a request whose head is in goes to a worker at once.
BUFFER_BUDGET = 64 * 1024 * 1024
DRAIN_TIME = 2.0
HOUSEKEEPING = 0.25
ACCEPT_BATCH = 64
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
READ_ALL = 1 << 62


class Gate:
    """The server's connection manager, in place of cheroot's: reads requests itself, hands workers whole ones.

    cheroot's server calls ``run``, ``stop``, ``close``, ``put`` and
    ``can_add_keepalive_connection`` on it, as on its own ``ConnectionManager``.
    """

    def __init__(self, server: Any, max_body: int, max_open: int) -> None:
        self.server = server
        self.max_body = max_body
        self.max_open = max_open
        self.quiet = limits.OncePerInterval()
        self._selector = selectors.DefaultSelector()
        self._stopping = False
        self._serving = threading.Lock()  # held while ``run`` runs
        self._held: dict[int, Held] = {}
        self._others: dict[int, Handshake | Draining] = {}
        self._pending_by_address: collections.Counter[str] = collections.Counter()
        self._buffered = 0
        self._open = 0
        self._open_lock = threading.Lock()
        self._returned: collections.deque[Any] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, data=None)  # workers returning connections
        # cheroot's listening socket has a 1 s timeout; a non-blocking twin lets us accept until none is left.
        self._listener = socket.socket(fileno=os.dup(server.socket.fileno()))
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, data=server)

    # -- called from other threads -------------------------------------------------------------

    def put(self, conn: Any) -> None:
        """A worker finished a request and keeps the connection: watch it for the next one."""
        self._returned.append(conn)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # a wake-up is already pending

    def closed(self, conn: Any) -> None:
        """A connection was closed (by anyone): it no longer counts against ``max_open``."""
        with self._open_lock:
            self._open -= 1

    @property
    def can_add_keepalive_connection(self) -> bool:
        return len(self._held) < MAX_PENDING

    def stop(self) -> None:
        """End ``run`` and wait until it has."""
        self._stopping = True
        self._wake()
        with self._serving:
            pass

    # -- the selector thread -------------------------------------------------------------------

    def run(self, expiration_interval: float) -> None:
        """Serve until ``stop`` (cheroot's ``serve`` calls this; the gate keeps its own timeouts)."""
        with self._serving:
            self._run()

    def _run(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        while not self._stopping:
            ready = [(key.fd, key.data) for key, _ in self._selector.select(timeout=HOUSEKEEPING)]
            for fd, data in ready:
                if data is self.server:
                    for _ in range(ACCEPT_BATCH):  # a burst of clients costs one select, not one each
                        if not self._accept():
                            break
                elif data is None:
                    self._take_returned()
                # An event for a socket closed earlier in this batch may name a descriptor reused since.
                elif isinstance(data, Held):
                    if self._held.get(fd) is data:
                        self._on_readable(fd, data)
                elif isinstance(data, Handshake):
                    if self._others.get(fd) is data:
                        self._on_handshake(fd, data)
                elif isinstance(data, Draining):
                    if self._others.get(fd) is data:
                        self._on_drain(fd, data)
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING
                self._expire_overdue(now)

    def _accept(self) -> bool:
        """Take one new connection if one waits; whether one did."""
        try:
            sock, addr = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._say("accept", "*", f"cannot accept connections: {exc.strerror} "
                                         f"({self._open} open)")
                time.sleep(0.05)  # the listening socket stays readable: do not spin on it
            return False
        self._accept_one(sock, addr)
        return True

    def _accept_one(self, sock: socket.socket, addr: Any) -> None:
        address, port = (addr[0], addr[1]) if isinstance(addr, tuple) and len(addr) >= 2 else ("", 0)
        with self._open_lock:
            too_many = self._open >= self.max_open
            crowded = self._pending_by_address[address] >= PENDING_PER_ADDRESS
            if not too_many and not crowded:
                self._open += 1
        if too_many or crowded:
            why = (f"{self._open} connections are open (the limit)" if too_many else
                   f"{address} has {PENDING_PER_ADDRESS} unfinished requests open (the limit per address)")
            self._say("connections" if too_many else "address", address,
                      f"refused a connection from {address}: {why}")
            sock.setblocking(False)
            if self.server.ssl_adapter is None:
                try:
                    send_now(sock, error_response(503, f"too many connections: {why}; retry later", retry_after=5))
                except OSError:
                    pass
            close_quietly(sock)
            return
        sock.setblocking(False)
        if self.server.ssl_adapter is not None:
            try:
                tls = self.server.ssl_adapter.context.wrap_socket(sock, server_side=True,
                                                                 do_handshake_on_connect=False)
            except (OSError, ValueError):
                self._forget_socket(sock)
                return
            shake = Handshake(tls, address, port, time.monotonic() + HANDSHAKE_TIMEOUT)
            self._pending_by_address[address] += 1  # a handshake is an unfinished request too
            self._others[tls.fileno()] = shake
            self._selector.register(tls.fileno(), selectors.EVENT_READ, data=shake)
            self._on_handshake(tls.fileno(), shake)
            return
        sock.settimeout(self.server.timeout)  # what workers expect; the descriptor stays non-blocking
        self._hold(Held(self, sock, None, address, port, MakeFile, {}, 0.0, False))

    def _forget_socket(self, sock: socket.socket) -> None:
        close_quietly(sock)
        self.closed(None)

    def _on_handshake(self, fd: int, shake: Handshake) -> None:
        try:
            shake.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(fd, selectors.EVENT_READ, shake)
            return
        except ssl.SSLWantWriteError:
            self._watch(fd, selectors.EVENT_WRITE, shake)
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", shake.address, exc)
            self._unwatch(fd)
            self._uncount(shake.address)
            self._forget_socket(shake.sock)
            return
        self._unwatch(fd)
        self._uncount(shake.address)
        adapter = self.server.ssl_adapter
        self._hold(Held(self, shake.sock, None, shake.address, shake.port, adapter.makefile,
                         adapter.get_environ(shake.sock), 0.0, False))

    def _watch(self, fd: int, events: int, data: Any) -> None:
        self._others[fd] = data
        try:
            self._selector.unregister(fd)
        except KeyError:
            pass
        self._selector.register(fd, events, data=data)

    def _unwatch(self, fd: int) -> None:
        self._others.pop(fd, None)
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _take_returned(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._returned:
            conn = self._returned.popleft()
            if not self.server.ready:
                conn.close()
                continue
            self._hold(Held(self, conn.socket, conn, conn.remote_addr or "", conn.remote_port or 0, None, {}, 0.0,
                             idle=not conn.rfile.has_data()))

    def _hold(self, held: Held) -> None:
        """Watch ``held`` until its request is whole (``held.idle``: no byte of it has come yet)."""
        sock = held.sock
        if isinstance(sock, ssl.SSLSocket):
            sock.setblocking(False)  # an SSLSocket with a timeout would wait for a whole record
        fd = sock.fileno()
        held.deadline = time.monotonic() + (IDLE_TIMEOUT if held.idle else REQUEST_TIMEOUT)
        conn = held.conn
        self._held[fd] = held
        self._pending_by_address[held.address] += 1
        self._selector.register(fd, selectors.EVENT_READ, data=held)
        if conn is not None and conn.rfile.has_data():  # the client sent its next request along with the last one
            held.idle = False
            while conn.rfile.has_data():  # take what cheroot's reader read ahead (no socket read: it has some)
                held.buffer += conn.rfile.read1(READ_ALL)
            self._buffered += len(held.buffer)
            self._advance(fd, held)
        elif isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._on_readable(fd, held)  # decrypted bytes wait inside the TLS layer: no readiness will come

    def _release(self, fd: int, held: Held) -> None:
        if self._held.pop(fd, None) is None:
            return
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass
        self._buffered -= len(held.buffer)
        self._uncount(held.address)

    def _uncount(self, address: str) -> None:
        left = self._pending_by_address[address] - 1
        if left > 0:
            self._pending_by_address[address] = left
        else:
            self._pending_by_address.pop(address, None)

    def _on_readable(self, fd: int, held: Held) -> None:
        data = read_some(held.sock)
        if data is None:
            return
        if not data:
            self._release(fd, held)
            held.close()  # the client hung up
            return
        if held.idle:
            held.idle = False
            held.deadline = time.monotonic() + REQUEST_TIMEOUT
        held.buffer += data
        self._buffered += len(data)
        self._advance(fd, held)

    def _advance(self, fd: int, held: Held) -> None:
        """Hand the request on if it is whole, refuse it if it breaks a limit, else wait for more."""
        if held.need > 0 and len(held.buffer) < held.need and self._buffered <= BUFFER_BUDGET:
            return  # the head was checked; more body to come
        if held.chunks is not None:
            verdict = held.chunks.scan(held.buffer)
        else:
            verdict = limits.examine(held.buffer, self.max_body)
            held.chunks = verdict.chunks
        if verdict.status == 0:
            held.need = verdict.need
            if verdict.expect_continue and not held.continued:
                held.continued = True  # the client waits for this before its body (cheroot may send one more: allowed)
                send_now(held.sock, CONTINUE)
            if not (held.need and self._buffered > BUFFER_BUDGET):
                return
        elif verdict.status != 200:
            self._refuse(fd, held, verdict.status, verdict.reason)
            return
        self._release(fd, held)
        conn = held.conn
        if conn is None:
            conn = self.server.ConnectionClass(self.server, held.sock, held.makefile)
            conn.remote_addr, conn.remote_port, conn.ssl_env = held.address, held.port, held.ssl_env
        # cheroot's reader (a ``_pyio.BufferedReader``) parses the request from its buffer. No public way to
        # fill it: a private pair, which tests/unit/test_cheroot_contract.py checks on the cheroot setup.cfg pins.
        conn.rfile._read_buf, conn.rfile._read_pos = bytes(held.buffer), 0
        held.buffer = bytearray()
        held.sock.settimeout(self.server.timeout)
        self.server.process_conn(conn)

    def _refuse(self, fd: int, held: Held, status: int, reason: str) -> None:
        self._release(fd, held)
        self._say(str(status), held.address, f"answered {status} to {held.address}: {reason}")
        try:
            send_now(held.sock, error_response(status, reason))
            held.sock.shutdown(socket.SHUT_WR)
        except (OSError, ssl.SSLError):
            held.close()
            return
        drain = Draining(held, time.monotonic() + DRAIN_TIME)
        self._watch(fd, selectors.EVENT_READ, drain)

    def _on_drain(self, fd: int, drain: Draining) -> None:
        data = read_some(drain.held.sock)
        if data is None:
            return
        drain.left -= len(data)
        if not data or drain.left <= 0:
            self._unwatch(fd)
            drain.close()

    def _expire_overdue(self, now: float) -> None:
        for fd, held in [(fd, h) for fd, h in self._held.items() if h.deadline <= now]:
            self._release(fd, held)
            if held.idle:
                held.close()  # an idle kept-alive connection: just close it
                continue
            reason = f"the request was not complete after {REQUEST_TIMEOUT:g} s"
            self._say("408", held.address, f"answered 408 to {held.address}: {reason}")
            try:
                send_now(held.sock, error_response(408, reason))
            except (OSError, ssl.SSLError):
                pass
            held.close()
        for fd, other in [(fd, o) for fd, o in self._others.items() if o.deadline <= now]:
            self._unwatch(fd)
            other.close()
            if isinstance(other, Handshake):
                self._uncount(other.address)
                self.closed(None)

    def _say(self, limit: str, address: str, message: str) -> None:
        held_back = self.quiet.check((limit, address))
        if held_back is not None:
            log.warning("%s%s", message, f" ({held_back} more like it in the last minute)" if held_back else "")

    def close(self) -> None:
        while self._returned:
            self._returned.popleft().close()
        for held in list(self._held.values()):
            held.close()
        for other in list(self._others.values()):
            other.close()
        self._held.clear()
        self._others.clear()
        self._selector.close()
        close_quietly(self._listener)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
