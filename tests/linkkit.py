"""Test kit for the master/minion link: linked node configs, a recording TCP proxy, a raw link client, relaying.

The raw link client (``RawMinion``) is ``bench.linkclient``'s: the rogue minion benchmark uses it too.
"""
from __future__ import annotations

import select
import socket
import threading

from bench.linkclient import RawMinion
from bench.procs import Node, Site, free_port, link_state, wait_link
from eventbus import event

__all__ = ["RawMinion", "RecordingProxy", "Site", "link_state", "master_link", "relay", "wait_link"]


def master_link(master: Node) -> dict:
    return link_state(master)


def relay(minion, *events: tuple[str, dict]) -> None:
    with event.MinionEvent(opts=minion.opts(), listen=False) as handle:
        for tag, data in events:
            assert handle.fire_master(data, tag) is True


class RecordingProxy:
    """A TCP forwarder from ``port`` to ``target`` that records every byte and can be cut and restored."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.recorded = bytearray()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self.restore()

    def restore(self) -> None:
        """Listen (again) and forward."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._stop = threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True).start()

    def cut(self) -> None:
        """Close the listener and every connection: the link is unplugged."""
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, stop), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
        peers = {a: b, b: a}
        try:
            while not stop.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.recorded += data
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.cut()
