"""Test kit for ``eventbus forward``: a forwarder beside a real master, a TCP proxy to cut, a bus watcher."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.tcpproxy import TcpProxy
from tests.helpers import Daemon, Node, wait_for, write_config

__all__ = ["Forwarder", "TcpProxy", "fire_many", "read_lines"]


class Forwarder:
    """A real ``eventbus forward -c DIR`` process sharing a test master's config dir and root."""

    def __init__(self, master: Node, brokers: list[dict], **keys: Any) -> None:
        self.master = master
        self.config_dir = master.config_dir
        keys.setdefault("root_dir", str(master.root))
        keys.setdefault("log_level", "info")
        self.path = write_config(self.config_dir, "forward", brokers=brokers, **keys)
        self.sock_dir = master.root / "var/run/eventbus/forward"
        self.daemon: Daemon | None = None

    def start(self, env: dict | None = None) -> "Forwarder":
        self.daemon = Daemon.eventbus("forward", self.config_dir, env=env).start()
        wait_for(self._answers, 20, what="eventbus forward to answer on its control socket")
        return self

    def _answers(self) -> bool:
        from eventbus import control, wire
        from eventbus.errors import BusUnavailableError

        if not self.daemon.alive():
            raise AssertionError(f"forward exited with {self.daemon.proc.returncode}:\n{self.daemon.log}")
        try:
            control.request(self.sock_dir, wire.VERB_PING, timeout=0.5)
            return True
        except BusUnavailableError:
            return False

    def stats(self) -> dict[str, dict]:
        from eventbus import control, wire

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
