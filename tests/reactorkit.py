"""Test kit for the reactor: a master with rules, its reactor's status, the result events it fires."""
from __future__ import annotations

import json
import os
from typing import Any

from eventbus.event import MasterEvent
from tests.helpers import Node, short_tmpdir, wait_for, write_config

RESULT = "eventbus/reactor/result"


def reactor_master(reactor: list, **keys: Any) -> Node:
    """A master config (not started) whose reactor has the rules ``reactor``."""
    return Node(short_tmpdir("ebr"), "master", reactor=reactor, **keys)


def set_rules(node: Node, reactor: Any) -> None:
    """Rewrite the node's master config with other rules (for a SIGHUP reload)."""
    raw = __import__("yaml").safe_load(node.path.read_text())
    raw["reactor"] = reactor
    node.keys["reactor"] = reactor  # a restart that rewrites the config (new ports) keeps these rules
    write_config(node.config_dir, "master", **raw)


def status(node: Node) -> dict | None:
    # From the default cachedir, not node.settings: a test may have broken the config on purpose.
    path = node.root / "var/cache/eventbus/master/reactor/status.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_reactor(node: Node, timeout: float = 15.0, **expect: Any) -> dict:
    """Wait until the node's reactor runs (and its status has the ``expect`` values)."""
    def ready() -> dict | None:
        current = status(node)
        if not current or not current["running"] or not pid_alive(current["pid"]):
            return None
        if any(current.get(name) != value for name, value in expect.items()):
            return None
        return current
    return wait_for(ready, timeout, what=f"the reactor to run with {expect}")


class Results:
    """The ``eventbus/reactor/result`` events (and others) seen on a master bus, collected as they come."""

    def __init__(self, node: Node) -> None:
        self.handle = MasterEvent(node.sock_dir, opts=node.opts())
        self.events: list[dict] = []

    def fire(self, tag: str, data: dict) -> None:
        assert self.handle.fire_event(data, tag, timeout=5000)

    def _drain(self) -> None:
        while True:
            event = self.handle.get_event_record(wait=0.05)
            if event is None:
                return
            self.events.append({"tag": event.tag, "data": event.data, "seq": event.seq})

    def tagged(self, tag: str) -> list[dict]:
        return [event for event in self.events if event["tag"] == tag]

    def results(self) -> list[dict]:
        return [event["data"] for event in self.tagged(RESULT)]

    def wait_results(self, count: int, timeout: float = 20.0) -> list[dict]:
        def enough() -> list[dict] | None:
            self._drain()
            found = self.results()
            return found if len(found) >= count else None
        try:
            return wait_for(enough, timeout, what=f"{count} reactor results")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {len(self.results())} came: "
                                 f"{sorted(r['seq'] for r in self.results())}") from None

    def settle(self, node: Node, timeout: float = 20.0) -> None:
        """Wait until the reactor has handled every event seen so far (and what they caused), then collect."""
        self._drain()
        last = max(event["seq"] for event in self.events)
        wait_for(lambda: (s := status(node)) and s["cursor"] >= last and s["in_flight"] == 0, timeout,
                 what=f"the reactor's cursor to pass seq {last}")
        self._drain()

    def close(self) -> None:
        self.handle.destroy()
