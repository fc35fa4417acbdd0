"""The fleet-wide bus (SPEC 12): masters' buses joined on a real 3-node NATS JetStream cluster.

Export (each event on the stream once, in each origin's order, also after an outage), import (each master's
bus carries the other masters' events once, never written back), hot mode (one copy of a relayed event), a
master cut off from the cluster, an unreachable cluster and a refused credential.
"""
from __future__ import annotations

import json
import time

import pytest

from bench.procs import wait_for
from eventbus import event, systemstatus
from tests.clusterkit import nats_cluster, stream_messages  # noqa: F401 - the fixture
from tests.fleetkit import Fleet, journal_events, link_state, log_of
from tests.helpers import failed
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def fleet(request):
    made = Fleet(heartbeat=0.5)
    yield made
    made.cleanup(show_logs=failed(request))


def cluster_key(urls, stream="FLEET", **more):
    return {"servers": list(urls), "stream": stream, "replicas": 3, "subject_prefix": "fleet", **more}


def status(master) -> dict:
    return systemstatus.read_cluster(master.settings) or {}


def wait_down(master, timeout=60.0) -> dict:
    """The data of the master's first ``eventbus/cluster/down`` event, once fired."""
    return wait_for(lambda: next((data for tag, data in journal_events(master, "eventbus/cluster/down")), None),
                    timeout, what=f"{master.keys['id']} fires eventbus/cluster/down")


def wait_up(*masters, timeout=60.0):
    for master in masters:
        wait_for(lambda: status(master).get("state") == "up", timeout, what=f"{master.keys['id']} up in the cluster")


def records(urls, stream="FLEET", tag="", **auth):
    """(stream seq, identity, origin, tag, data) of each stream message whose tag starts with ``tag``."""
    out = []
    for seq, headers, body in stream_messages(urls, stream, **auth):
        record = json.loads(body)
        if record["tag"].startswith(tag):
            out.append((seq, headers["Nats-Msg-Id"], headers["Eventbus-Origin"], record["tag"], record["data"]))
    return out


def fire(master, tag, count, key="n", first=0):
    with event.MasterEvent(opts=master.opts(), listen=False) as handle:
        for n in range(first, first + count):
            assert handle.fire_event({key: n}, tag)


def numbers_on_bus(master, tag):
    """Per origin (``_origin``, or ``local``), the ``n`` of each event ``tag`` in the master's journal, in order."""
    out: dict[str, list[int]] = {}
    for _, data in journal_events(master, tag):
        inner = data["data"] if data.get("cmd") == "_minion_event" else data
        out.setdefault(data.get("_origin", "local"), []).append(inner["n"])
    return out


def test_two_masters_events_are_on_the_stream_once_and_on_each_bus_once_in_order(nats_cluster, fleet):
    urls = nats_cluster.urls
    one = fleet.master(cluster=cluster_key(urls))
    two = fleet.master(cluster=cluster_key(urls))
    wait_up(one, two)
    fire(one, "t/one", 60)
    fire(two, "t/two", 60)
    wait_for(lambda: len(records(urls, tag="t/")) >= 120, 60, what="120 events on the stream")
    stored = records(urls, tag="t/")
    assert len(stored) == 120
    assert len({identity for _, identity, *_ in stored}) == 120
    for master, tag in ((one, "t/one"), (two, "t/two")):
        mine = [(origin, data["n"]) for _, _, origin, t, data in stored if t == tag]
        assert mine == [(master.keys["id"], n) for n in range(60)]
    # Each bus: its own events and the other's, once each, in order; nothing imported is exported again.
    wait_for(lambda: numbers_on_bus(one, "t/two").get("master2") == list(range(60)), 60, what="master1 imports")
    wait_for(lambda: numbers_on_bus(two, "t/one").get("master1") == list(range(60)), 60, what="master2 imports")
    assert numbers_on_bus(one, "t/") == {"local": list(range(60)), "master2": list(range(60))}
    assert numbers_on_bus(two, "t/") == {"local": list(range(60)), "master1": list(range(60))}
    time.sleep(1.0)  # anything written back would show up now
    assert len(records(urls, tag="t/")) == 120
    assert status(one)["exported"] >= 60 and status(one)["imported"] >= 60


REACT_ONCE = [{"t/hot": [{"fire": {"tag": "t/reacted", "data": {"n": "{{ data.data.n }}"}}}]}]


def test_hot_mode_a_relayed_event_is_stored_once_on_each_bus_once_and_reacted_to_once(nats_cluster, fleet):
    urls = nats_cluster.urls
    one = fleet.master(cluster=cluster_key(urls), reactor=REACT_ONCE)
    two = fleet.master(cluster=cluster_key(urls), reactor=REACT_ONCE)
    wait_up(one, two)
    minion = fleet.minion("hot1", [one, two])
    for master in (one, two):
        wait_for(lambda m=master: "hot1" in link_state(m)["present"], 30, what="hot1 present")
    fire_minion(minion, "t/hot", 100)
    wait_for(lambda: len(records(urls, tag="t/hot")) >= 100, 60, what="100 relayed events on the stream")
    time.sleep(1.0)
    stored = records(urls, tag="t/hot")
    assert sorted(data["data"]["n"] for *_, data in stored) == list(range(100))
    relay_seqs = sorted(int(identity.split(":")[1]) for _, identity, *_ in stored)
    assert all(identity.startswith("hot1:") for _, identity, *_ in stored)
    assert relay_seqs == list(range(relay_seqs[0], relay_seqs[0] + 100))  # one message per relay seq
    for master in (one, two):
        wait_for(lambda m=master: sorted(sum(numbers_on_bus(m, "t/hot").values(), [])) == list(range(100)),
                 60, what="each relayed event on each bus")
        merged = [n for _, data in journal_events(master, "t/hot") for n in [data["data"]["n"]]]
        assert merged == list(range(100))  # own copies and imports together: once each, in the minion's order
    assert status(one)["duplicates"] + status(two)["duplicates"] >= 100
    # One reaction per fleet event, on one master or the other: 100 on the stream, each n once.
    wait_for(lambda: len(records(urls, tag="t/reacted")) >= 100, 90, what="the reactions on the stream")
    time.sleep(2.0)
    reacted = records(urls, tag="t/reacted")
    assert sorted(int(data["n"]) for *_, data in reacted) == list(range(100))


def fire_minion(minion, tag, count):
    with event.MinionEvent(opts=minion.opts(), listen=False) as handle:
        for n in range(count):
            assert handle.fire_master({"n": n}, tag) is True


def test_a_master_cut_off_catches_up_once_in_order_past_the_duplicate_window(tmp_path, fleet):
    """Master two is cut off while both take a hot minion's events; past the stream's duplicate window it comes
    back and writes what it took: the stream still holds each event once (the masters' own record)."""
    import asyncio

    import nats
    from nats.js.api import StreamConfig

    from eventbus.cli.natscluster import NatsCluster

    # Clients learn no other node's URL: master two reaches the cluster only through the proxy.
    nats_cluster = NatsCluster(tmp_path / "nats", advertise=False).__enter__()
    urls = nats_cluster.urls

    async def make_stream():
        client = await nats.connect(urls)
        try:
            await client.jetstream().add_stream(StreamConfig(name="FLEET", subjects=["fleet.>"], num_replicas=3,
                                                             duplicate_window=1.0))
        finally:
            await client.close()

    asyncio.run(make_stream())
    proxy = TcpProxy(int(urls[0].rsplit(":", 1)[1]))
    try:
        one = fleet.master(cluster=cluster_key(urls))
        two = fleet.master(cluster=cluster_key([proxy.url]))
        wait_up(one, two)
        minion = fleet.minion("hot2", [one, two])
        for master in (one, two):
            wait_for(lambda m=master: "hot2" in link_state(m)["present"], 30, what="hot2 present")
        proxy.cut()
        wait_for(lambda: status(two).get("state") == "down", 60, what="master2 down")
        fire_minion(minion, "t/cut", 40)
        fire(two, "t/alone", 10)
        wait_for(lambda: len(records(urls, tag="t/cut")) >= 40, 60, what="master1 wrote the relayed events")
        time.sleep(2.5)  # past the 1 s duplicate window
        assert sum(numbers_on_bus(two, "t/cut").values(), []) == list(range(40))
        proxy.restore()
        wait_for(lambda: len(records(urls, tag="t/alone")) >= 10, 90, what="master2's own events after the outage")
        wait_for(lambda: status(two).get("export_lag") == 0, 60, what="master2 caught up")
        stored = records(urls, tag="t/")
        cut = sorted(int(identity.split(":")[1]) for _, identity, _, tag, _ in stored if tag == "t/cut")
        assert cut == list(range(cut[0], cut[0] + 40))
        assert [data["n"] for *_, tag, data in stored if tag == "t/alone"] == list(range(10))
        assert status(two)["duplicates"] >= 40
        downs = [data for tag, data in journal_events(two, "eventbus/cluster/") if tag.endswith("/down")]
        assert downs and downs[0]["error"]
        # Fired on the bus right after the write that brought master2 back up: wait for it, not only the state.
        wait_for(lambda: len(journal_events(two, "eventbus/cluster/up")) >= 2, 30, what="master2's second up event")
    finally:
        proxy.close()
        nats_cluster.close()


def test_an_unreachable_cluster_leaves_the_master_serving_and_catches_up_when_it_is_there(tmp_path, fleet):
    from eventbus.cli.natscluster import NatsCluster

    cluster = NatsCluster(tmp_path / "nats")  # configured, not started: nothing listens on its ports
    try:
        master = fleet.master(cluster=cluster_key(cluster.urls))
        assert "refused" in wait_down(master)["error"]
        assert status(master)["state"] == "down" and "refused" in status(master)["error"]
        from tests.helpers import run_cli

        shown = run_cli("status", "-c", str(master.config_dir)).stdout.splitlines()
        assert any(line.startswith("cluster: down (") and "refused" in line for line in shown), shown
        with event.MasterEvent(opts=master.opts(), listen=True) as bus:
            fire(master, "t/local", 20)
            got = [bus.get_event(wait=10, tag="t/local", full=True) for _ in range(20)]
        assert [item["data"]["n"] for item in got if item] == list(range(20))  # the bus serves locally
        downs = [data for tag, data in journal_events(master, "eventbus/cluster/down")]
        assert len(downs) == 1 and "refused" in downs[0]["error"]
        cluster.start()
        cluster.wait_ready()
        wait_up(master, timeout=90)
        # The up event is fired once the cluster took a write (the outage's events), so it is exported after
        # them; under load the new connection may also drop and come back first (nats-py reconnects).
        def exported() -> list | None:
            got = records(cluster.urls)
            tags = [tag for *_, tag, _ in got]
            return got if "eventbus/cluster/up" in tags and tags.count("t/local") >= 20 else None
        stored = wait_for(exported, 60, what="the outage's events and then the up event exported")
        tags = [tag for *_, tag, _ in stored]
        assert tags[0] == "eventbus/cluster/down"
        assert [data["n"] for *_, tag, data in stored if tag == "t/local"] == list(range(20))
        assert tags.index("eventbus/cluster/up") > max(i for i, t in enumerate(tags) if t == "t/local")
    finally:
        cluster.close()


def test_a_refused_credential_is_down_with_the_reason_and_the_password_is_never_logged(tmp_path, fleet):
    from eventbus.cli.natscluster import NatsCluster

    with NatsCluster(tmp_path / "nats", user="fleet", password="right-password-123") as cluster:
        master = fleet.master(cluster=cluster_key(cluster.urls, user="fleet", password="wrong-password-456"),
                              log_level="info")
        assert "authorization" in wait_down(master)["error"]
        assert status(master)["state"] == "down" and "authorization" in status(master)["error"]
        fire(master, "t/served", 1)
        assert [tag for tag, _ in journal_events(master, "t/served")] == ["t/served"]
        downs = [data for tag, data in journal_events(master, "eventbus/cluster/down")]
        assert downs and "authorization" in downs[0]["error"]
        master.stop()
        assert "wrong-password-456" not in log_of(master)
        assert "authorization" in log_of(master)


class Firing:
    """A thread firing ``t/steady`` ``{"n"}`` on a master at about ``rate`` events a second until stopped."""

    def __init__(self, master, rate: float = 100.0) -> None:
        import threading

        self.master = master
        self.every = 1.0 / rate
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with event.MasterEvent(opts=self.master.opts(), listen=False) as handle:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                assert handle.fire_event({"n": self.sent}, "t/steady")
                self.sent += 1
                next_at += self.every
                self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(30)
        return self.sent


def test_stream_leader_killed_then_the_whole_cluster_away_for_30_s_every_event_once_in_order(nats_cluster, fleet):
    urls = nats_cluster.urls
    master = fleet.master(cluster=cluster_key(urls))
    wait_up(master)
    firing = Firing(master, 100)
    try:
        wait_for(lambda: len(records(urls, tag="t/steady")) >= 100, 60, what="a steady stream")
        leader = nats_cluster.stream_leader("FLEET")
        nats_cluster.kill(leader)
        time.sleep(3.0)
        nats_cluster.start_node(leader)
        nats_cluster.wait_ready()
        wait_for(lambda: status(master).get("export_lag", 1) == 0 and status(master).get("state") == "up", 90,
                 what="export caught up after the leader's death")
        nats_cluster.kill_all()
        wait_down(master)
        time.sleep(30.0)
        assert status(master)["export_lag"] > 1000  # the master kept taking events meanwhile
        nats_cluster.start()
        nats_cluster.wait_ready(quorum=True)
        time.sleep(2.0)
    finally:
        sent = firing.stop()
    wait_for(lambda: status(master).get("export_lag", 1) == 0 and status(master).get("state") == "up", 120,
             what="export caught up after the outage")
    stored = [data["n"] for *_, tag, data in records(urls, tag="t/steady")]
    assert stored == list(range(sent))


def test_failover_mid_stream_each_event_once_on_the_stream_and_on_both_buses(nats_cluster, fleet):
    """A failover minion's live master is SIGKILLed mid-stream and comes back later: what it had taken but not
    exported goes to the stream after the other master's, stored once, and reaches the other master's bus."""
    urls = nats_cluster.urls
    one = fleet.master(cluster=cluster_key(urls))
    two = fleet.master(cluster=cluster_key(urls))
    wait_up(one, two)
    minion = fleet.minion("fo1", [one, two], master_type="failover", master_alive_interval=0.5)
    wait_for(lambda: "fo1" in link_state(one)["present"], 30, what="fo1 on master1")
    from tests.fleetkit import RelayStream

    relay = RelayStream(minion, "t/fo", count=300, every=0.01).start()
    wait_for(lambda: len(records(urls, tag="t/fo")) >= 60, 60, what="part of the stream exported")
    one.daemon.kill()
    relay.join(120)
    # What master1 took (and acknowledged) but had not yet written to the stream waits in its journal until
    # it is back (docs/fleet.md, A master dies): under load that can be a few events.
    one.start()
    wait_up(one, timeout=90)
    wait_for(lambda: status(one).get("export_lag") == 0, 60, what="master1 exported what it had")
    wait_for(lambda: len(records(urls, tag="t/fo")) >= 300, 90, what="every event on the stream")
    stored = records(urls, tag="t/fo")
    assert sorted(data["data"]["n"] for *_, data in stored) == list(range(300))  # each once
    for master in (one, two):
        wait_for(lambda m=master: sorted(n for _, d in journal_events(m, "t/fo") for n in [d["data"]["n"]])
                 == list(range(300)), 60, what=f"every event once on {master.keys['id']}'s bus")


def test_sse_ids_from_master_one_resume_on_master_two_after_master_one_dies(nats_cluster):
    """Real masters exporting, an API on each: read master 1's API with ids, SIGKILL master 1 and its API, and
    resume on master 2's API with the last id: the rest of the fleet's events, no gap, no duplicate."""
    from tests.apinode import PASSWORDS, ApiEnv
    from tests.integration.test_api_fleet import stream

    urls = nats_cluster.urls
    envs = [ApiEnv({"id": f"sse{n}", "cluster": cluster_key(urls), "heartbeat_interval": 0.5}) for n in (1, 2)]
    try:
        for env in envs:
            env.add_user("alice", PASSWORDS["alice"])
            env.start_master()
            env.start_api()
        for env in envs:
            wait_up(env.master)
        one, two = envs
        with stream(one, one.login()) as reader:
            fire(one.master, "t/sse/one", 20)
            fire(two.master, "t/sse/two", 20)
            got = [r for r in reader.records(30, within=60)]
        fleet_ids = [r["id"] for r in got]
        assert fleet_ids == sorted(fleet_ids) and len(set(fleet_ids)) == 30
        one.api.kill()
        one.master.daemon.kill()
        fire(two.master, "t/sse/two", 10, first=20)  # while master 1 is dead
        with stream(two, two.login(), last_id=got[-1]["id"]) as resumed:
            rest = [r for r in resumed.records(20, within=60)]
        every = [(r["tag"], r["data"]["data"]["n"]) for r in got + rest if r["tag"].startswith("t/sse/")]
        ids = [r["id"] for r in got + rest]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # no duplicate, stream order
        assert sorted(every) == sorted([("t/sse/one", n) for n in range(20)] + [("t/sse/two", n) for n in range(30)])
        stored = [seq for seq, *_ in records(urls) if seq > got[0]["id"] - 1]
        assert [r["id"] for r in got + rest] == [s for s in stored if s <= rest[-1]["id"]][:len(ids)]  # no gap
    finally:
        for env in envs:
            env.stop_api()
            env.master.stop()
            env.cleanup()


@pytest.mark.parametrize("reachable", [True, False], ids=["cluster up", "cluster unreachable"])
def test_a_master_killed_leaves_no_cluster_process_behind(reachable, tmp_path, fleet):
    import os
    import signal

    from eventbus.cli.natscluster import NatsCluster

    cluster = NatsCluster(tmp_path / "nats", nodes=1)
    try:
        if reachable:
            cluster.start()
            cluster.wait_ready()
        master = fleet.master(cluster=cluster_key(cluster.urls, replicas=1))
        if reachable:
            wait_up(master)
        else:
            wait_down(master)
        child = status(master)["pid"]
        os.kill(master.daemon.proc.pid, signal.SIGKILL)

        def gone() -> bool:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return True
            return False
        wait_for(gone, 30, what="the cluster process to stop after its master's SIGKILL")
    finally:
        cluster.close()


def test_the_import_verb_joins_at_an_empty_streams_end_and_takes_each_stream_seq_once(fleet):
    """What the cluster process hands the master (verb ``cluster_import``): a master new to the fleet joins at
    the stream's end, also when that is 0 (an empty stream: its first message is then imported), and a
    stream seq it took is never published twice, nor its own events, and a relayed event it has is skipped."""
    import msgpack

    from eventbus.bus import control

    master = fleet.master(cluster=cluster_key(["nats://127.0.0.1:9"]))  # its cluster process never connects
    wait_down(master)

    def hand(**args):
        return control.request(master.sock_dir, b"cluster_import", {"events": [], **args}, 5.0)

    def frame(n, origin="mX", **more):
        return b"t/imp\x00" + msgpack.packb({"n": n, "_origin": origin, **more})

    assert hand(through=0)["joined"] is False
    assert hand(through=0, join=True) == {"through": 0, "joined": True, "published": 0, "duplicates": 0}
    assert hand(through=1, events=[[1, "", 0, "mX", frame(1)]])["published"] == 1
    assert hand(through=2, events=[[1, "", 0, "mX", frame(1)], [2, "", 0, "mX", frame(2)]])["published"] == 1
    relayed = {"id": "web9", "cmd": "_minion_event"}
    assert hand(through=3, events=[[3, "web9", 5, "mX", frame(3, **relayed)]])["published"] == 1
    assert hand(through=4, events=[[4, "web9", 5, "mY", frame(3, "mY", **relayed)]])["duplicates"] == 1
    assert [d["n"] for _, d in journal_events(master, "t/imp")] == [1, 2, 3]
    assert all(d["_origin"] == "mX" for _, d in journal_events(master, "t/imp"))


def test_a_token_from_the_environment_joins_the_master_and_a_wrong_one_is_refused(tmp_path, fleet, monkeypatch):
    from eventbus.cli.natscluster import NatsCluster

    monkeypatch.setenv("FLEET_TOKEN", "the-right-token-42")
    with NatsCluster(tmp_path / "nats", nodes=1, token="the-right-token-42") as cluster:
        good = fleet.master(cluster=cluster_key(cluster.urls, replicas=1, token_env="FLEET_TOKEN"))
        bad = fleet.master(cluster=cluster_key(cluster.urls, replicas=1, token="a-wrong-token-17"))
        wait_up(good)
        assert "authorization" in wait_down(bad)["error"]
        fire(good, "t/token", 3)
        wait_for(lambda: len(records(cluster.urls, tag="t/token", token="the-right-token-42")) == 3, 30,
                 what="the events on the stream")


def test_a_creds_file_joins_the_master_in_operator_mode_and_a_user_of_an_unknown_account_is_refused(tmp_path, fleet):
    """``creds``, as NATS deployments in operator mode hand credentials out: a user JWT and its nkey seed."""
    import nkeys

    from eventbus.cli.natscluster import NatsCluster
    from tests.natsoperator import Operator, new_key

    operator = Operator()
    member, stranger = tmp_path / "member.creds", tmp_path / "stranger.creds"
    seeds = [operator.user_creds(member), operator.user_creds(stranger, signer=new_key(nkeys.PREFIX_BYTE_ACCOUNT))]
    with NatsCluster(tmp_path / "nats", nodes=1, extra=operator.config_lines()) as cluster:
        good = fleet.master(cluster=cluster_key(cluster.urls, replicas=1, creds=str(member)))
        bad = fleet.master(cluster=cluster_key(cluster.urls, replicas=1, creds=str(stranger)))
        wait_up(good)
        assert "authorization" in wait_down(bad)["error"].lower()
        fire(good, "t/creds", 3)
        wait_for(lambda: [r[4]["n"] for r in records(cluster.urls, tag="t/creds", creds=str(member))] == [0, 1, 2],
                 30, what="the events on the stream, read with the member's creds")
    for master in good, bad:
        assert not any(seed in log_of(master) for seed in seeds)


@pytest.mark.parametrize("child, keys", [("eventbus.daemon.cluster", {"cluster": cluster_key(["nats://127.0.0.1:9"])}),
                                         ("eventbus.daemon.reactor", {"reactor": REACT_ONCE})],
                         ids=["cluster process", "reactor"])
def test_a_child_whose_master_died_before_it_started_stops(child, keys, fleet):
    """The master hands its pid to its children (``EVENTBUS_MASTER_PID``): a master killed before its child
    even ran leaves none behind."""
    import os
    import subprocess
    import sys

    master = fleet.master(start=False, **keys)
    gone = subprocess.Popen(["true"])
    gone.wait()
    proc = subprocess.Popen([sys.executable, "-m", child, str(master.path)],
                            env={**os.environ, "EVENTBUS_MASTER_PID": str(gone.pid)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            raise AssertionError(f"{child} still runs a minute after its master was gone")


def publish_forged(urls, messages):
    """Publish ``(subject, record, identity, origin)`` to the FLEET stream as anyone with write access can."""
    import asyncio

    import nats

    async def run():
        client = await nats.connect(list(urls))
        try:
            js = client.jetstream()
            for subject, record, identity, origin in messages:
                await js.publish(subject, json.dumps(record).encode(),
                                 headers={"Nats-Msg-Id": identity, "Eventbus-Origin": origin})
        finally:
            await client.close()

    asyncio.run(run())


def test_a_forged_relayed_identity_on_the_stream_writes_no_file_outside_and_stops_no_master(nats_cluster, fleet,
                                                                                          tmp_path):
    """Fuzz findings F20 and F21 (fleet_record through the master's import): a stream message claiming to be a
    relayed copy names the minion whose relay seqs the master keeps in a file. A relay seq past u64 stalled
    every import (the cluster process could not hand it to the master and started over on it, forever); a
    minion id that is a path had the master write that file outside its directory."""
    urls = nats_cluster.urls
    master = fleet.master(cluster=cluster_key(urls))
    wait_up(master)
    escaped = tmp_path / "escaped-relay-seqs"
    climb = "../" * 40 + str(escaped).lstrip("/")
    relayed = {"cmd": "_minion_event", "tag": "t/forged", "data": {}}
    publish_forged(urls, [
        ("fleet.t.forged", {"seq": 1, "tag": "t/forged", "data": {**relayed, "id": climb}}, f"{climb}:5", "m9"),
        ("fleet.t.forged", {"seq": 2, "tag": "t/forged", "data": {**relayed, "id": "web1"}},
         "web1:99999999999999999999", "m9"),
        ("fleet.t.honest", {"seq": 3, "tag": "t/honest", "data": {"n": 1}}, "m8:3", "m8"),
    ])
    wait_for(lambda: journal_events(master, "t/honest"), 60, what="the event after the forged ones imported")
    assert master.daemon.alive()
    assert not escaped.exists()
    # They are fleet events like any (their writer may publish events), but no minion's relayed copies.
    assert [data["_origin"] for _, data in journal_events(master, "t/forged")] == ["m9", "m9"]
    fire(master, "t/after", 1)
    wait_for(lambda: records(urls, tag="t/after"), 30, what="the master still exporting")


def test_the_import_verb_refuses_a_relay_naming_no_minion(fleet, tmp_path):
    """The same through ``ctl.ipc``'s ``cluster_import`` verb (what the cluster process hands the master)."""
    from eventbus.bus import control
    from eventbus.bus.payload import pack_frame
    from eventbus.errors import DaemonRefusedError
    from tests.helpers import free_port

    master = fleet.master(cluster=cluster_key([f"nats://127.0.0.1:{free_port()}"]))
    escaped = tmp_path / "escaped"
    frame = pack_frame("t/forged", {"cmd": "_minion_event", "id": "x", "_origin": "m9"}, 1 << 20)
    for minion, relay_seq in (("../" * 40 + str(escaped).lstrip("/"), 5), ("web1", 0), ("web1", -1),
                              ("a b", 1)):
        with pytest.raises(DaemonRefusedError, match="names no minion"):
            control.request(master.settings.sock_dir, b"cluster_import",
                            {"through": 1, "events": [[1, minion, relay_seq, "m9", frame]]})
    for through in (-1, True, "1"):
        with pytest.raises(DaemonRefusedError, match="expected"):
            control.request(master.settings.sock_dir, b"cluster_import", {"through": through, "events": []})
    assert not escaped.exists()
    answer = control.request(master.settings.sock_dir, b"cluster_import",
                             {"through": 1, "events": [[1, "web1", 7, "m9", frame]]})
    assert answer["published"] == 1 and master.daemon.alive()
