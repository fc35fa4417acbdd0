"""SIGHUP to every daemon: none dies of it; each says in one line what it reloaded and what needs a restart."""
from __future__ import annotations

import re
import signal
from typing import Iterator

import pytest
import requests
import yaml

from eventbus.bus import control, wire
from eventbus import event
from tests.apinode import running_api
from tests.forwardkit import Forwarder
from tests.helpers import Daemon, Node, short_tmpdir, wait_for, write_config
from tests.reactorkit import Results, pid_alive, set_rules, status, wait_reactor


def hup_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log.splitlines() if "SIGHUP:" in line]


def hup(daemon: Daemon) -> str:
    """Send SIGHUP and return the one log line the daemon answers with (it must still run)."""
    before = len(hup_lines(daemon))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.check_alive() or len(hup_lines(daemon)) > before, 10,
             what=f"{daemon.name} to log its SIGHUP line")
    daemon.check_alive()
    lines = hup_lines(daemon)
    assert len(lines) == before + 1, lines
    return lines[-1]


def change_key(path, **keys: object) -> None:
    raw = yaml.safe_load(path.read_text())
    raw.update(keys)
    write_config(path.parent, path.name, **raw)


def round_trip(node: Node, tag: str) -> None:
    """An event fired on the node's bus comes back to a listener of it."""
    with event.get_event(node.name, opts=node.opts()) as bus:
        assert bus.fire_event({"after": "hup"}, tag, timeout=5000)
        assert bus.get_event(wait=10, tag=tag) is not None


@pytest.fixture
def plain_master() -> Iterator[Node]:
    node = Node(short_tmpdir("ebh"), "master")
    node.start()
    yield node
    node.stop()
    node.cleanup()


def test_a_master_without_rules_takes_sighup_then_starts_stops_and_keeps_its_reactor(plain_master: Node) -> None:
    node = plain_master
    line = hup(node.daemon)
    assert "nothing to reload" in line and "Traceback" not in node.daemon.log
    round_trip(node, "t/after/hup")
    with event.get_event("master", opts=node.opts(), listen=False) as before:
        assert before.fire_event({"n": 0}, "t/new", timeout=5000)  # before the rules: never reacted to

    # Rules written into the config of a running master: SIGHUP starts its reactor.
    change_key(node.path, presence_events=True)
    set_rules(node, [{"t/new": [{"fire": {"tag": "t/new/done", "data": {"n": "{{ data.n }}"}}}]}])
    line = hup(node.daemon)
    assert re.search(r"reactor started \(pid \d+, 1 rules\)", line) and "need a restart: presence_events" in line
    wait_reactor(node, rules=1)
    bus = Results(node)
    try:
        bus.fire("t/new", {"n": 1})
        result = bus.wait_results(1)[0]
        assert result["ok"] is True and result["rule"] == "t/new" and result["action"] == "fire"
        bus.settle(node)
        assert [e["data"]["n"] for e in bus.tagged("t/new/done")] == ["1"] and status(node)["done"] == 1

        # A config that no longer parses: one error line, the rules that work stay.
        node.path.write_text(node.path.read_text() + "reactor: [{'t/x': [{explode: {}}]}]\n")
        line = hup(node.daemon)
        assert "[ERROR]" in line and "unknown action 'explode'" in line and "Traceback" not in node.daemon.log
        bus.fire("t/new", {"n": 2})
        bus.wait_results(2)

        # Every rule removed: the reactor stops cleanly, the master goes on.
        set_rules(node, [])
        line = hup(node.daemon)
        assert "reactor stopped (no rules)" in line
        pid = status(node)["pid"]
        wait_for(lambda: not status(node)["running"], 15, what="the reactor to stop")
        wait_for(lambda: not pid_alive(pid), 15, what="the reactor process to exit")
    finally:
        bus.close()
    round_trip(node, "t/after/stop")


def test_a_minion_takes_sighup_and_names_the_keys_that_need_a_restart(minion: Node) -> None:
    assert "nothing to reload" in hup(minion.daemon)
    change_key(minion.path, heartbeat_interval=2)
    line = hup(minion.daemon)
    assert "need a restart: heartbeat_interval" in line
    round_trip(minion, "t/minion/after/hup")


def test_the_api_takes_sighup_and_goes_on_serving() -> None:
    with running_api() as env:
        assert "nothing to reload" in hup(env.api)
        change_key(env.config_dir / "api", token_expire=60)
        line = hup(env.api)
        assert "need a restart: token_expire" in line and "jwt" not in line.lower()
        assert env.login()
        assert requests.get(env.url("/"), timeout=5).status_code == 200


def test_the_forwarder_takes_sighup_and_goes_on_forwarding(master: Node) -> None:
    forward = Forwarder(master, [{"name": "all", "type": "file", "path": "all.jsonl"}]).start()
    try:
        assert "nothing to reload" in hup(forward.daemon)
        change_key(forward.path, brokers=[{"name": "all", "type": "file", "path": "other.jsonl"}])
        assert "need a restart: brokers" in hup(forward.daemon)
        with event.get_event("master", opts=master.opts(), listen=False) as bus:
            assert bus.fire_event({"n": 1}, "t/fwd/after/hup", timeout=5000)
        forward.wait_delivered("all", 1, timeout=20)
        assert control.request(forward.sock_dir, wire.VERB_PING, timeout=2)["node"] == "forward"
    finally:
        forward.stop()
