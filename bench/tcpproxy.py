"""A TCP proxy on loopback that a test can cut and restore: broker outages without stopping shared services.

``cut()`` closes the listening socket and every connection through it, so
clients see their connection drop and new connects refused, as when a broker
host goes away; ``restore()`` listens on the same port again. ``stall()``
keeps every connection open but passes no more bytes either way, as a hung
broker or a dropped route does (nothing tells the client). Threads and plain
sockets only.
"""
from __future__ import annotations

import socket
import threading

from bench.procs import free_port


class TcpProxy:
    """Forwards ``host``:``port`` to ``target_host``:``target_port`` while not cut.

    ``host`` may be another loopback address (``127.0.0.2``): a client that
    reaches the proxy there shows it used the host it was given.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.connections = 0  # accepted so far, for tests that want to see traffic went through
        self._flowing = threading.Event()
        self._flowing.set()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcpproxy-accept").start()
        return self

    def restore(self) -> "TcpProxy":
        """Forward again after ``cut()`` (same port)."""
        self._flowing.set()
        return self.start()

    def stall(self) -> None:
        """Hold every byte from now on, without closing anything (``cut()`` ends the stall)."""
        self._flowing.clear()

    def close(self) -> None:
        """Stop for good (the same as ``cut``)."""
        self.cut()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones (both directions)."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            _close(listener)
        for sock in sockets:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True,
                                 name="tcpproxy-pump").start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                while not self._flowing.wait(0.2):
                    if sink.fileno() < 0:
                        return  # cut() closed it while stalled
                sink.sendall(chunk)
        except OSError:
            pass  # the other side or cut() closed it: end this direction
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
