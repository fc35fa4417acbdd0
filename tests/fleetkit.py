"""Test kit for fleets: masters each on its own ports in its own temp dir, and minions linked to a list of them.

A ``Fleet`` makes the nodes (``bench.procs.Node``) and stops them all;
``RelayStream`` relays numbered events from a thread through ``fire_master``;
``journal_events`` and ``numbers`` read back what a master took from its
journal, so a master killed with SIGKILL still tells what it had; the
minion's ``link`` answer says which master is live (``masters_of``,
``live_master``, ``wait_live``).
"""
from __future__ import annotations

import threading
from typing import Any

from bench.procs import Node, free_port, link_state, short_tmpdir, wait_for
from eventbus import event
from eventbus.bus import payload, wire
from eventbus.journal.reader import JournalReader

__all__ = ["Fleet", "RelayStream", "collect", "journal_events", "link_state", "live_master", "log_of", "master_item",
           "masters_of", "name_of", "numbers", "unanswered_item", "wait_live"]


class Fleet:
    """Masters on ports of their own and minions linked to a list of them; ``cleanup`` stops them all.

    ``keys`` (e.g. ``log_level``) go into every node's config, ``master_keys`` into every master's;
    ``heartbeat`` is every link's.
    """

    def __init__(self, heartbeat: float = 0.3, master_keys: dict | None = None, **keys: Any) -> None:
        self.heartbeat = heartbeat
        self.master_keys = master_keys or {}
        self.keys = keys
        self.masters: list[Node] = []
        self.minions: list[Node] = []

    def master(self, start: bool = True, **keys: Any) -> Node:
        """A master (auto-accepting unless told; id ``masterN``), started unless ``start`` is false."""
        keys.setdefault("id", f"master{len(self.masters) + 1}")
        node = Node(short_tmpdir("ebm"), "master", **{"heartbeat_interval": self.heartbeat, "auto_accept": True,
                                                        **self.keys, **self.master_keys, **keys})
        self.masters.append(node)
        if start:
            node.start()
        return node

    def minion(self, minion_id: str, masters: list, start: bool = True, **keys: Any) -> Node:
        """A minion whose ``master`` list names ``masters`` (nodes, or items as written), in that order."""
        items = [master_item(m) if isinstance(m, Node) else m for m in masters]
        node = Node(short_tmpdir("ebn"), "minion", **{"heartbeat_interval": self.heartbeat, **self.keys, **keys,
                                                        "id": minion_id, "master": items})
        self.minions.append(node)
        if start:
            node.start()
        return node

    def cleanup(self, keep: bool = False, show_logs: bool = False) -> None:
        """Stop every node, minions first; remove their dirs unless ``keep``. With ``show_logs`` (a failed
        test), print the end of each node's log first, for the test's report."""
        for node in [*reversed(self.minions), *reversed(self.masters)]:
            if show_logs:
                print(f"--- log of {node.keys.get('id', node.name)} (its end) ---\n{log_of(node)[-6000:]}")
            if node.daemon is not None and node.daemon.alive():
                node.stop()
            node.cleanup(keep)


def master_item(master: Node) -> dict:
    """The minion config's item for ``master``: its host and both its ports."""
    return {"host": "127.0.0.1", "ret_port": master.keys["ret_port"], "publish_port": master.keys["publish_port"]}


def unanswered_item() -> dict:
    """An item for a master that never answers: ports nothing listens on."""
    return {"host": "127.0.0.1", "ret_port": free_port(), "publish_port": free_port()}


def name_of(master: Node | dict) -> str:
    """``host:ret_port``: how the minion's ``link`` answer, its log and ``eventbus status`` name a master."""
    item = master_item(master) if isinstance(master, Node) else master
    return f"{item['host']}:{item['ret_port']}"


def masters_of(minion: Node) -> dict[str, dict]:
    """The minion's ``link`` answer's line for each master, by name."""
    return {line["master"]: line for line in link_state(minion)["masters"]}


def live_master(minion: Node) -> str | None:
    """The name of the master the minion relays to and that accepts it, if any."""
    lines = [line for line in link_state(minion)["masters"] if line["live"] and line["state"] == "accept"]
    return lines[0]["master"] if len(lines) == 1 else None


def wait_live(minion: Node, master: Node | dict, timeout: float = 20.0) -> None:
    """Wait until ``master`` is the minion's one live master and accepts it."""
    name = name_of(master)
    try:
        wait_for(lambda: live_master(minion) == name, timeout, what=f"{minion.keys['id']} to relay to {name}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its masters now: {masters_of(minion)}\n{log_of(minion)[-3000:]}") from None


def collect(bus: Any, tag: str, count: int, wait: float = 10.0) -> list[dict]:
    """Up to ``count`` events under ``tag`` (full), stopping after ``wait`` s without one."""
    got = []
    while len(got) < count:
        item = bus.get_event(wait=wait, tag=tag, full=True)
        if item is None:
            break
        got.append(item)
    return got


class RelayStream:
    """A thread relaying events ``tag``, ``{"n": N, "minion": ID}`` from N = ``first``, one every ``every`` s.

    It stops after ``count`` events, or at ``stop()`` (``count`` None: only then); ``numbers`` are
    the N it relayed. ``fire_master`` hands each event to the minion daemon (it says ``True``); the
    daemon spools it, so what happens to the masters meanwhile is the link's business, not the sender's.
    """

    def __init__(self, minion: Node, tag: str, count: int | None = None, every: float = 0.01,
                 first: int = 0) -> None:
        self.minion = minion
        self.tag = tag
        self.count = count
        self.first = first
        self.every = every
        self.sent = 0
        self.refused: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def numbers(self) -> list[int]:
        return list(range(self.first, self.first + self.sent))

    def start(self) -> "RelayStream":
        self._thread.start()
        return self

    def _run(self) -> None:
        n = self.first
        with event.MinionEvent(opts=self.minion.opts(), listen=False) as handle:
            while not self._stop.is_set() and (self.count is None or self.sent < self.count):
                if handle.fire_master({"n": n, "minion": self.minion.keys["id"]}, self.tag) is not True:
                    self.refused.append(n)
                n += 1
                self.sent += 1
                self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 60.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the relay thread of {self.minion.keys['id']} did not finish"
        assert not self.refused, f"fire_master refused events {self.refused}"


def journal_events(master: Node, tag: str = "") -> list[tuple[str, dict]]:
    """Every event in the master's journal whose tag starts with ``tag``, in bus order: (tag, data)."""
    reader = JournalReader(master.settings.journal_dir)
    out: list[tuple[str, dict]] = []
    after = 0
    while True:
        got = reader.read(after, 1000)
        for _seq, frame in got.events:
            _, _, raw_tag, raw_data = wire.split_bus_frame(frame)
            if raw_tag.decode().startswith(tag):
                out.append((raw_tag.decode(), payload.unpack_data(raw_data)))
        if got.events:
            after = got.events[-1][0]
        if got.at_end:
            return out


def numbers(master: Node, tag: str) -> dict[str, list[int]]:
    """Per minion id, the ``n`` of each relayed ``tag`` event in the master's journal, in bus order."""
    out: dict[str, list[int]] = {}
    for _, data in journal_events(master, tag):
        out.setdefault(data["id"], []).append(data["data"]["n"])
    return out


def log_of(node: Node) -> str:
    """What the node's daemon has logged so far."""
    return node.daemon.log if node.daemon is not None else ""
