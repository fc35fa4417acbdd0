"""Forwarders with ``source: fleet``: the fleet stream to a broker once across all masters running it (SPEC 8, 12).

Real masters and real ``eventbus forward`` daemons on a real 3-node NATS cluster; the fleet events are put
into the stream as a master's export writes them.
"""
from __future__ import annotations

import json
import os
import signal
import uuid
from typing import Any, Iterator

import pytest

from tests.clusterkit import nats_cluster  # noqa: F401 (the fixture)
from tests.forwardkit import Forwarder, hook_receiver, read_lines
from tests.helpers import Node, run_cli, short_tmpdir, wait_for
from tests.integration.test_cluster_reactor import cluster_block, publish, stop_all

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def site() -> Iterator[list[Any]]:
    """Masters and forwarders made by a test, stopped and removed after it."""
    made: list[Any] = []
    yield made
    stop_all([thing for thing in made if isinstance(thing, Forwarder)])
    masters = [thing for thing in made if not isinstance(thing, Forwarder)]
    stop_all(masters)
    for master in masters:
        master.cleanup()


def fleet_master(block: dict[str, Any], name: str) -> Node:
    return Node(short_tmpdir("ebf"), "master", id=name, event_journal=True, cluster=block)


def test_each_stream_event_reaches_the_broker_once_across_two_forwarders(nats_cluster, site):
    block = cluster_block(nats_cluster, "F" + uuid.uuid4().hex[:8].upper())
    masters = [fleet_master(block, "fa"), fleet_master(block, "fb")]
    site += masters
    forwarders = []
    for node in masters:
        node.start()
        # The same broker (name) on both masters; each writes the events it got to a file of its own.
        forwarders.append(Forwarder(node, [{"name": "fleet.log", "type": "file", "source": "fleet",
                                            "tags": ["t/*"], "path": str(node.root / "out.jsonl")}]))
        site.append(forwarders[-1])
    for forwarder in forwarders:
        forwarder.start()
    seqs = publish(block, [("t/fwd", {"n": n}) for n in range(60)] + [("u/skip", {"n": -1})])

    def records() -> list[dict]:
        return [r for node in masters for r in read_lines(node.root / "out.jsonl")]
    wait_for(lambda: len(records()) >= 60, 60, what="60 fleet events in the two files")
    wait_for(lambda: sum(f.stats()["fleet.log"]["pending"] for f in forwarders) == 0, 30,
             what="both forwarders to hold nothing")
    got = records()
    assert sorted(r["seq"] for r in got) == seqs[:60], "each stream event once, its stream seq as seq"
    assert {r["seq"]: r["data"]["n"] for r in got} == dict(zip(seqs, range(60)))
    assert {r["tag"] for r in got} == {"t/fwd"} and {r["data"]["_origin"] for r in got} == {"m0"}
    assert sum(f.stats()["fleet.log"]["delivered"] for f in forwarders) == 60


def test_a_forwarder_killed_mid_stream_loses_nothing_and_sends_nothing_twice(nats_cluster, site):
    """A holds events its broker refuses (503) when it is killed: they reach the broker once, through B."""
    block = cluster_block(nats_cluster, "G" + uuid.uuid4().hex[:8].upper())
    a, b = fleet_master(block, "ga"), fleet_master(block, "gb")
    site += [a, b]
    with hook_receiver(down=True) as refusing, hook_receiver() as taking:
        def hook(server: Any) -> list[dict]:
            return [{"name": "hook", "type": "webhook", "source": "fleet", "tags": ["t/*"], "retries": 0,
                     "url": f"http://127.0.0.1:{server.server_address[1]}/in"}]
        a.start()
        forward_a = Forwarder(a, hook(refusing))
        site.append(forward_a)
        forward_a.start()
        wait_for(lambda: "reads the fleet stream" in forward_a.log, 30, what="A's forwarder to read the stream")
        first = publish(block, [("t/kill", {"n": n}) for n in range(100)])
        wait_for(lambda: forward_a.stats()["hook"]["pending"] == 100, 30, what="A to hold the 100 events")
        b.start()
        forward_b = Forwarder(b, hook(taking))
        site.append(forward_b)
        forward_b.start()
        later = publish(block, [("t/kill", {"n": n}) for n in range(100, 150)])
        os.kill(forward_a.daemon.pid, signal.SIGKILL)
        forward_a.daemon.proc.wait()

        def received() -> list[dict]:
            with taking.lock:
                return [json.loads(body) for _, _, body in taking.received]
        wait_for(lambda: len(received()) >= 150, 60, what="the 150 events at the broker through B")
        wait_for(lambda: forward_b.stats()["hook"]["pending"] == 0, 30, what="B to hold nothing")
        got = received()
        assert sorted(r["seq"] for r in got) == first + later, "every stream event once: none lost, none twice"
        assert not refusing.received


def test_source_fleet_needs_the_cluster_key_on_the_master(site):
    master = Node(short_tmpdir("ebf"), "master")
    site.append(master)
    forwarder = Forwarder(master, [{"name": "f", "type": "file", "source": "fleet"}])
    done = run_cli("forward", "-c", str(forwarder.config_dir), timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'source'" in lines[0] \
        and "cluster" in lines[0], done.stderr


def test_a_wrong_source_is_one_line_naming_the_key(site):
    master = Node(short_tmpdir("ebf"), "master")
    site.append(master)
    forwarder = Forwarder(master, [{"name": "f", "type": "file", "source": "stream"}])
    done = run_cli("forward", "-c", str(forwarder.config_dir), timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "key 'source' has value 'stream'" in lines[0], done.stderr
