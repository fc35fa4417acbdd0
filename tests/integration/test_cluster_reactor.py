"""The reactor in cluster mode: each fleet event triggers its rules once across all masters (SPEC 10 and 12).

Two real masters share one stream on a real 3-node NATS cluster; their reactors read it through the
shared consumer ``reactor``. The fleet events are put into the stream as a master's export writes them.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from eventbus.cluster import jetstream, records
from eventbus.cluster.settings import ClusterSettings
from tests.clusterkit import NatsCluster, nats_cluster  # noqa: F401 (the fixture)
from tests.helpers import Node, short_tmpdir, wait_for
from tests.reactorkit import Results, pid_alive, status

pytestmark = pytest.mark.timeout(120)


def cluster_block(cluster: NatsCluster, stream: str) -> dict[str, Any]:
    return {"servers": cluster.urls, "stream": stream, "subject_prefix": stream.lower(), "replicas": 1}


def publish(block: dict[str, Any], events: list[tuple[str, dict]], origin: str = "m0") -> list[int]:
    """Put ``(tag, data)`` events into the stream as master ``origin``'s export would; their stream seqs."""
    settings = ClusterSettings(servers=tuple(block["servers"]), stream=block["stream"],
                               subject_prefix=block["subject_prefix"])

    async def run() -> list[int]:
        client = await jetstream.connect(settings, name="test-publisher")
        try:
            js = client.jetstream()
            await jetstream.ensure_stream(js, settings)
            seqs = []
            for tag, data in events:
                local = uuid.uuid4().int % 10**9
                ack = await js.publish(records.subject_for(settings.subject_prefix, tag),
                                       records.body(local, tag, data),
                                       headers=records.headers(records.own_identity(origin, local), origin))
                seqs.append(ack.seq)
            return seqs
        finally:
            await client.close()
    return asyncio.run(run())


def fleet_master(block: dict[str, Any], rules: list, name: str) -> Node:
    return Node(short_tmpdir("ebc"), "master", id=name, event_journal=True, cluster=block, reactor=rules)


def wait_fleet_reactor(node: Node) -> dict:
    """Wait until the node's reactor runs and reads the stream."""
    def ready() -> dict | None:
        current = status(node)
        if current and current["running"] and pid_alive(current["pid"]) \
                and (current.get("fleet") or {}).get("state") == "up":
            return current
        return None
    return wait_for(ready, 40, what=f"master {node.keys['id']}'s reactor to read the fleet stream")


def lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def stop_all(nodes: list[Any]) -> None:
    """Stop the running daemons (masters, forwarders) at once: each stop waits for the daemon to exit."""
    running = [node for node in nodes if node.daemon is not None and node.daemon.alive()]
    threads = [threading.Thread(target=node.stop) for node in running]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture
def masters() -> Iterator[list[Node]]:
    made: list[Node] = []
    yield made
    stop_all(made)
    for node in made:
        node.cleanup()


def test_each_fleet_event_triggers_its_rule_once_across_two_masters(nats_cluster, masters, tmp_path):
    block = cluster_block(nats_cluster, "R" + uuid.uuid4().hex[:8].upper())
    out = tmp_path / "reactions"
    rule = [{"t/n": [{"run": {"argv": ["/bin/sh", "-c", f'echo "$0 $1 $2" >> {out}', "{{ seq }}",
                                       "{{ data.n }}", "{{ data._origin }}"]}}]}]
    masters += [fleet_master(block, rule, "ma"), fleet_master(block, rule, "mb")]
    for node in masters:
        node.start()
    for node in masters:
        wait_fleet_reactor(node)
    results = [Results(node) for node in masters]
    try:
        seqs = publish(block, [("t/n", {"n": n}) for n in range(40)] + [("other/tag", {"n": -1})])
        expected = {f"{seq} {n} m0" for seq, n in zip(seqs, range(40))}
        wait_for(lambda: set(lines(out)) >= expected, 60, what="a reaction to each of the 40 fleet events")
        # Every event acked on both masters: nothing more can come.
        wait_for(lambda: all((s := status(node)) and s["in_flight"] == 0 and s["fleet"]["held"] == 0
                             for node in masters), 30, what="both reactors to be idle")
        assert sorted(lines(out)) == sorted(expected), "each fleet event reacted to exactly once across both masters"
        # The results name the stream seqs, each once; each bus carries the fleet's (its own and imported).
        for res, node in zip(results, masters):
            try:
                reported = res.wait_results(40, 30)
            except AssertionError as exc:
                from eventbus import systemstatus
                raise AssertionError(f"{exc}\ncluster status of each master: "
                                     f"{[systemstatus.read_cluster(m.settings) for m in masters]}") from None
            assert sorted(r["seq"] for r in reported) == seqs[:40] and all(r["ok"] for r in reported)
    finally:
        for res in results:
            res.close()


def test_a_reactor_killed_mid_reaction_leaves_the_rest_to_the_other_master(nats_cluster, masters, tmp_path):
    """The first action finished on master A; A dies (kill -9) in the second: B runs only the second."""
    block = cluster_block(nats_cluster, "K" + uuid.uuid4().hex[:8].upper())
    out, hold, pidfile = tmp_path / "out", tmp_path / "hold", tmp_path / "pid"
    hold.touch()
    rule = [{"t/k": [
        {"run": {"argv": ["/bin/sh", "-c", f'echo "first $0" >> {out}', "{{ seq }}"]}},
        {"run": {"argv": ["/bin/sh", "-c", f'if [ -e {hold} ]; then echo $$ > {pidfile}; sleep 60; fi; '
                          f'echo "second $0" >> {out}', "{{ seq }}"], "timeout": 90}},
    ]}]
    a, b = fleet_master(block, rule, "ka"), fleet_master(block, rule, "kb")
    masters += [a, b]
    a.start()
    reactor_a = wait_fleet_reactor(a)["pid"]
    seq, = publish(block, [("t/k", {"n": 1})])
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() and f"first {seq}" in lines(out), 30,
             what="master A's reactor to finish the first action and be inside the second")
    # Master A's host dies: its master, its reactor and the action it ran, all at once.
    exporter_a = wait_for(lambda: json.loads(path.read_text())["pid"] if (path := a.root / "var/cache/eventbus/"
                          "master/cluster/status.json").exists() else None, 30, what="A's cluster child")
    a.daemon.kill()
    os.kill(reactor_a, signal.SIGKILL)
    os.kill(exporter_a, signal.SIGKILL)  # A's cluster child (a host that dies takes it along)
    os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    wait_for(lambda: not pid_alive(reactor_a), 10, what="A's reactor to be gone")
    hold.unlink()
    b.start()
    wait_fleet_reactor(b)
    results = Results(b)
    try:
        later = publish(block, [("t/k", {"n": 2})])[0]
        # After the consumer's ack_wait the event A held goes to B.
        wait_for(lambda: {f"second {seq}", f"first {later}", f"second {later}"} <= set(lines(out)), 60,
                 what="master B to take over the event A held, and react to the next one")
        wait_for(lambda: (s := status(b)) and s["in_flight"] == 0 and s["fleet"]["held"] == 0, 30,
                 what="B's reactor to be idle")
        assert sorted(lines(out)) == sorted([f"first {seq}", f"second {seq}", f"first {later}", f"second {later}"]), \
            "the action A finished is not repeated, the one it did not finish runs once, nothing is missed"
        reported = results.wait_results(3, 30)
        assert sorted((r["seq"], r["action"]) for r in reported) == [(seq, "run"), (later, "run"), (later, "run")]
    finally:
        results.close()
        b.stop()
    assert "the cluster is away" not in b.daemon.log, b.daemon.log


def test_without_cluster_the_reactor_status_has_no_fleet(masters):
    """A master without ``cluster``: the reactor follows its own bus, as it always did."""
    node = Node(short_tmpdir("ebc"), "master", reactor=[{"t/x": [{"fire": {"tag": "t/y"}}]}])
    masters.append(node)
    node.start()
    current = wait_for(lambda: (s := status(node)) and s["running"] and s, 30, what="the reactor")
    assert "fleet" not in current and isinstance(current["cursor"], int)
    assert json.loads(json.dumps(current))["rules"] == 1
