"""The gate: cheroot's connection loop, changed so a request reaches a worker thread only when it is whole.

Stock cheroot hands a connection to a worker as soon as it turns readable,
and the worker then blocks reading the head (up to ``socket_timeout``): 20
connections sending half a head hold 20 workers, and ``/login`` waits. Here
the one selector thread that already accepts connections and watches
kept-alive ones also reads them, without blocking, into the connection's
own read buffer, until ``netapi.limits.examine`` says the head and the
body are in; only then does a worker get the connection, and it finds
every byte already buffered. So a slow or half-open client costs a
registered socket and its bytes so far, never a thread. The same loop

- answers 431 (head over 16 KiB or too many header lines), 414 (URL too
  long), 413 (``Content-Length`` over ``max_event_size``, before any body
  byte is read) and 408 (request unfinished after ``REQUEST_TIMEOUT``),
  then drains briefly what the client is still sending, so it reads the
  answer instead of a reset;
- closes kept-alive connections idle for ``IDLE_TIMEOUT``;
- refuses (503) a new connection when its address already has
  ``PENDING_PER_ADDRESS`` unfinished ones, or the process has ``max_open``
  connections in all;
- does the TLS handshake without blocking (stock cheroot does it in this
  very thread, blocking every new client behind one silent one).

A chunked body is followed chunk by chunk (``limits.ChunkedBody``) until
its last chunk, and refused 413 as soon as its chunks add up to more than
``max_event_size``.
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

from cheroot import connections
from cheroot.server import HeaderReader
from cheroot.makefile import MakeFile
from cherrypy._cpwsgi_server import CPWSGIServer

from netapi import limits
from netapi.gateconn import (Draining, Handshake, Held, Wake, close_quietly, error_response, read_some,
                             send_now)

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

class Gate(connections.ConnectionManager):
    """cheroot's ``ConnectionManager`` that reads requests itself and hands workers only whole ones."""

    def __init__(self, server: Any, max_body: int, max_open: int) -> None:
        super().__init__(server)
        self.max_body = max_body
        self.max_open = max_open
        self.quiet = limits.OncePerInterval()
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
        self._selector.register(self._wake_r, selectors.EVENT_READ, data=Wake())
        # cheroot's listening socket has a 1 s timeout; a non-blocking twin lets us accept until none is left.
        self._listener = socket.socket(fileno=os.dup(server.socket.fileno()))
        self._listener.setblocking(False)

    # -- called from worker threads ------------------------------------------------------------

    def put(self, conn: Any) -> None:
        """A worker finished a request and keeps the connection: watch it for the next one."""
        self._returned.append(conn)
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

    @property
    def _num_connections(self) -> int:
        return self._open

    # -- the selector thread -------------------------------------------------------------------

    def _run(self, expiration_interval: float) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING
        while not self._stop_requested:
            try:
                ready = list(self._selector.select(timeout=HOUSEKEEPING))
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, data in ready:
                if data is self.server:
                    for _ in range(ACCEPT_BATCH):  # a burst of clients costs one select, not one each
                        if not self._accept():
                            break
                elif isinstance(data, Wake):
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

    def _expire(self, threshold: float) -> None:  # cheroot's own expiry: ours is ``_expire_overdue``
        pass

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
        connections.prevent_socket_inheritance(sock)
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

    def _connection(self, sock: socket.socket, makefile: Any, address: str, port: int, ssl_env: dict) -> Any:
        conn = self.server.ConnectionClass(self.server, sock, makefile)
        conn.remote_addr = address
        conn.remote_port = port
        conn.ssl_env = ssl_env
        return conn

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
            rfile = conn.rfile  # cheroot's reader (``_pyio.BufferedReader``): take what it read ahead
            held.buffer += rfile._read_buf[rfile._read_pos:]
            rfile._read_buf, rfile._read_pos = b"", 0
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
            pass  # cheroot's ``_remove_invalid_sockets`` dropped it already
        self._buffered -= len(held.buffer)
        self._uncount(held.address)

    def _uncount(self, address: str) -> None:
        left = self._pending_by_address[address] - 1
        if left > 0:
            self._pending_by_address[address] = left
        else:
            self._pending_by_address.pop(address, None)

    def _on_readable(self, fd: int, held: Held) -> None:
        try:
            data = read_some(held.sock)
        except (OSError, ssl.SSLError):
            data = b""
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
        conn = held.conn or self._connection(held.sock, held.makefile, held.address, held.port, held.ssl_env)
        rfile = conn.rfile  # cheroot's reader (``_pyio.BufferedReader``) parses the request from its buffer
        rfile._read_buf, rfile._read_pos = bytes(held.buffer), 0
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
        try:
            data = read_some(drain.held.sock)
        except (OSError, ssl.SSLError):
            data = b""
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
            self._say("408", held.address, f"answered 408 to {held.address}: the request was not complete "
                                           f"after {REQUEST_TIMEOUT:g} s")
            try:
                send_now(held.sock, error_response(408, f"the request was not complete after "
                                                          f"{REQUEST_TIMEOUT:g} s"))
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


class NoFoldHeaderReader(HeaderReader):
    """cheroot's header reader, refusing obsolete line folding (RFC 9112 5.2 allows a 400).

    cheroot would replace a folded header's value by its last line, so a
    ``ce-source`` split over two lines would silently become another source.
    """

    def __call__(self, rfile: Any, hdict: Any = None) -> Any:
        wrapped = _FoldCheck(rfile)
        return super().__call__(wrapped, hdict)


class _FoldCheck:
    def __init__(self, rfile: Any) -> None:
        self.rfile = rfile

    def readline(self, *args: Any) -> bytes:
        line = self.rfile.readline(*args)
        if line[:1] in (b" ", b"\t"):
            raise ValueError("a header line starts with a space or tab (obsolete line folding)")
        return line


class GatedServer(CPWSGIServer):
    """CherryPy's WSGI server with the gate as its connection manager."""

    def __init__(self, server_adapter: Any, max_body: int, max_open: int) -> None:
        super().__init__(server_adapter)
        self.gate_max_body = max_body
        self.gate_max_open = max_open
        self.keep_alive_conn_limit = None
        base = self.ConnectionClass

        class NoFoldRequest(base.RequestHandlerClass):  # type: ignore[misc, name-defined]
            header_reader = NoFoldHeaderReader()

        class CountedConnection(base):  # type: ignore[misc, valid-type]
            """A connection that tells the gate when it closes, once."""

            counted = True
            RequestHandlerClass = NoFoldRequest

            def close(conn) -> None:  # noqa: N805  (``self`` is the server in this scope)
                if conn.counted:
                    conn.counted = False
                    gate = getattr(self, "_connections", None)
                    if isinstance(gate, Gate):
                        gate.closed(conn)
                super().close()

        self.ConnectionClass = CountedConnection

    def prepare(self) -> None:
        super().prepare()
        stock = self._connections
        self._connections = Gate(self, self.gate_max_body, self.gate_max_open)
        stock._selector.close()
