"""Test kit for ``eventbus forward``: a forwarder beside a real master, a TCP proxy to cut, a bus watcher."""
from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

from bench.tcpproxy import TcpProxy
from tests.helpers import Daemon, Node, wait_for, write_config

__all__ = ["Forwarder", "TcpProxy", "fire_many", "hook_receiver", "read_lines"]


class Forwarder:
    """A real ``eventbus forward -c DIR`` process sharing a test master's config dir and root."""

    def __init__(self, master: Node, brokers: list[dict] | None, *, pasted: str = "", **keys: Any) -> None:
        """``pasted``: YAML text added as it is after the keys (e.g. a Rasa ``event_broker:`` block)."""
        self.master = master
        self.config_dir = master.config_dir
        keys.setdefault("root_dir", str(master.root))
        keys.setdefault("log_level", "info")
        if brokers is not None:
            keys["brokers"] = brokers
        self.path = write_config(self.config_dir, "forward", **keys)
        if pasted:
            self.path.write_text(self.path.read_text() + pasted)
        self.sock_dir = master.root / "var/run/eventbus/forward"
        self.daemon: Daemon | None = None

    def start(self, env: dict | None = None) -> "Forwarder":
        self.daemon = Daemon.eventbus("forward", self.config_dir, env=env).start()
        wait_for(self._answers, 20, what="eventbus forward to answer on its control socket")
        return self

    def _answers(self) -> bool:
        from eventbus.bus import control, wire
        from eventbus.errors import BusUnavailableError

        if not self.daemon.alive():
            raise AssertionError(f"forward exited with {self.daemon.proc.returncode}:\n{self.daemon.log}")
        try:
            control.request(self.sock_dir, wire.VERB_PING, timeout=0.5)
            return True
        except BusUnavailableError:
            return False

    def stats(self) -> dict[str, dict]:
        from eventbus.bus import control, wire

        return {b["name"]: b for b in control.request(self.sock_dir, wire.VERB_STATS, timeout=5)["brokers"]}

    def wait_delivered(self, name: str, count: int, timeout: float = 60) -> dict:
        return wait_for(lambda: (s := self.stats()[name])["delivered"] >= count and s, timeout,
                        what=f"broker {name} to deliver {count} events")

    def stop(self) -> int | None:
        return self.daemon.stop() if self.daemon is not None else None

    @property
    def log(self) -> str:
        return self.daemon.log if self.daemon is not None else ""


def fire_many(master: Node, count: int, tag: str = "test/fwd", start: int = 0) -> None:
    """Fire ``count`` events numbered ``n`` = start.. onto the master bus."""
    from eventbus.event import MasterEvent

    with MasterEvent(master.sock_dir, opts=master.settings, listen=False) as bus:
        for n in range(start, start + count):
            assert bus.fire_event({"n": n}, tag, timeout=5000)


def read_lines(path: Path) -> list[dict]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Hook(BaseHTTPRequestHandler):
    """Answers 503 while the server is ``down``, 500 to its next ``failures`` POSTs, then 200; keeps every
    request it answered 200."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            if server.down:
                code = 503
            elif server.failures > 0:
                server.failures -= 1
                code = 500
            else:
                server.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                code = 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def hook_receiver(failures: int = 0, down: bool = False) -> Iterator[ThreadingHTTPServer]:
    """A local webhook receiver on a free port (``server_address``), serving in a thread of its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.failures = failures
    server.down = down
    server.received = []
    server.lock = threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
