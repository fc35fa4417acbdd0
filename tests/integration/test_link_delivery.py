"""Events over the master/minion link through restarts, cuts and freezes: replays, spools, targets, presence."""
from __future__ import annotations

import signal
import time

import msgpack

from eventbus.daemon.link import protocol
from eventbus import event
from tests.fleetkit import collect
from tests.helpers import run_cli, wait_for
from tests.linkkit import RawMinion, RecordingProxy, link_state, master_link, relay, wait_link


def cli(node, *args: str):
    return run_cli(*args, "-c", str(node.config_dir))


def test_master_restart_and_cut_link_lose_and_repeat_nothing(site):
    master = site.master(auto_accept=True)
    master.start()
    proxy = RecordingProxy(site.ret_port)
    try:
        minion = site.minion("m1", ret_port=proxy.port)
        minion.start()
        wait_link(minion, "accept")
        bus = event.get_event("master", opts=master.opts())
        relay(minion, *[("myco/seq", {"n": n}) for n in range(0, 50)])
        first = collect(bus, "myco/seq", 50)
        # Cut the link, relay while it is down, bring it back.
        proxy.cut()
        cut_at = time.monotonic()
        wait_for(lambda: "m1" not in master_link(master)["present"], timeout=5, interval=0.01,
                 what="the unplugged minion to leave the present set")
        assert time.monotonic() - cut_at < 2 * 0.3 + 1.0  # two heartbeats, plus slack for a busy machine
        wait_link(minion, "connecting", timeout=5)
        relay(minion, *[("myco/seq", {"n": n}) for n in range(50, 100)])
        wait_for(lambda: link_state(minion)["spooled"] >= 50, what="50 events spooled")  # + any unacked tail
        proxy.restore()
        second = collect(bus, "myco/seq", 50)
        bus.destroy()
        # Restart the master while the link is cut, so a fresh listener is live before the minion returns.
        proxy.cut()
        assert master.stop() == 0
        relay(minion, *[("myco/seq", {"n": n}) for n in range(100, 150)])
        master.start()
        bus = event.get_event("master", opts=master.opts())
        proxy.restore()
        third = collect(bus, "myco/seq", 51, wait=1.5)
        bus.destroy()
        seen = [e["data"]["data"]["n"] for e in first + second + third]
        assert seen == list(range(150)), f"lost or repeated events: {seen}"
    finally:
        proxy.close()


def test_master_drops_replayed_batches_even_after_a_restart(site):
    master = site.master(auto_accept=True)
    master.start()
    raw = RawMinion(master, "raw1")
    try:
        assert raw.hello().value["result"] == "accept"
        frames = [b"myco/dup\x00" + msgpack.packb({"n": n}) for n in range(5)]
        with event.get_event("master", opts=master.opts()) as bus:
            raw.send(protocol.events(1, 0, frames[:3]))
            assert raw.expect(protocol.ACK).value == 3
            raw.send(protocol.events(1, 0, frames[:3]))
            assert raw.expect(protocol.ACK).value == 3
            assert [e["data"]["data"]["n"] for e in collect(bus, "myco/dup", 4, wait=1)] == [0, 1, 2]
        master.stop()
        master.start()
        with event.get_event("master", opts=master.opts()) as bus:
            welcome = raw.hello()
            assert welcome.value["last"] == 3
            raw.send(protocol.events(1, 0, frames))
            assert raw.expect(protocol.ACK).value == 5
            assert [e["data"]["data"]["n"] for e in collect(bus, "myco/dup", 3, wait=1)] == [3, 4]
            # A batch after a gap the minion did not account for is sent back, not accepted.
            raw.send(protocol.events(9, 0, frames[:1]))
            assert raw.expect(protocol.RESEND).value == 5
            assert bus.get_event(wait=0.5, tag="myco/dup") is None
    finally:
        raw.close()


def test_minion_restart_keeps_a_non_empty_spool(site):
    master = site.master()
    master.start()
    minion = site.minion("m1", spool_max_events=100)
    minion.start()
    wait_link(minion, "pend")
    for n in range(2):
        result = cli(minion, "send", "myco/spooled", f"n={n}")
        assert result.returncode == 0, result.stderr
    relay(minion, *[("myco/spooled", {"n": str(n)}) for n in range(2, 30)])
    wait_for(lambda: link_state(minion)["spooled"] == 30, what="30 events spooled")
    minion.daemon.kill()
    minion.start()
    assert link_state(minion)["spooled"] == 30
    with event.get_event("master", opts=master.opts()) as bus:
        assert cli(master, "key", "--accept", "m1").returncode == 0
        got = collect(bus, "myco/spooled", 31, wait=1.5)
    assert [e["data"]["data"]["n"] for e in got] == [str(n) for n in range(30)]
    wait_for(lambda: link_state(minion)["spooled"] == 0, what="spool emptied")


def test_fire_master_handles_closed_one_after_another_spool_everything_in_order(site):
    """A closed ``fire_master`` handle's events are in the spool when ``destroy`` returns (no waiting), so
    the next handle's come after them, and a burst from one handle is all there."""
    master = site.master()
    master.start()
    minion = site.minion("m1", spool_max_events=5000)
    minion.start()
    wait_link(minion, "pend")
    for n in range(100):
        relay(minion, ("myco/inorder", {"n": n}))
        assert link_state(minion)["spooled"] == n + 1
    relay(minion, *[("myco/inorder", {"n": n}) for n in range(100, 3000)])
    assert link_state(minion)["spooled"] == 3000
    with event.get_event("master", opts=master.opts()) as bus:
        assert cli(master, "key", "--accept", "m1").returncode == 0
        got = collect(bus, "myco/inorder", 3000, wait=5)
    assert [e["data"]["data"]["n"] for e in got] == list(range(3000))


def test_a_full_spool_drops_the_oldest_and_says_so(site):
    master = site.master()
    master.start()
    minion = site.minion("m1", spool_max_events=10)
    minion.start()
    wait_link(minion, "pend")
    relay(minion, *[("myco/full", {"n": n}) for n in range(25)])
    state = wait_for(lambda: (s := link_state(minion))["dropped"] == 15 and s, what="15 dropped")
    assert state["spooled"] == 10
    assert "spool is full" in minion.daemon.log
    with event.get_event("master", opts=master.opts()) as bus:
        assert cli(master, "key", "--accept", "m1").returncode == 0
        got = collect(bus, "myco/full", 11, wait=1.5)
    assert [e["data"]["data"]["n"] for e in got] == list(range(15, 25))


def test_fire_target_glob_no_match_and_a_minion_that_went_away(site):
    # Long heartbeats: the frozen minion must still count as connected when the fire goes out.
    master = site.master(auto_accept=True, heartbeat_interval=5)
    master.start()
    minions = {name: site.minion(name, heartbeat_interval=5) for name in ("web1", "web2", "db1")}
    handles = {}
    try:
        for name, node in minions.items():
            node.start()
            wait_link(node, "accept")
            handles[name] = event.get_event("minion", opts=node.opts())
        fired = cli(master, "fire", '{"deploy": 7}', "myco/deploy", "--node", "master", "--target", "web*")
        assert fired.returncode == 0, fired.stderr
        assert sorted(fired.stdout.splitlines()) == ["web1: True", "web2: True"]
        for name in ("web1", "web2"):
            assert handles[name].get_event(wait=5, tag="myco/deploy")["deploy"] == 7
        assert handles["db1"].get_event(wait=0.5, tag="myco/deploy") is None

        nomatch = cli(master, "fire", "{}", "myco/x", "--node", "master", "--target", "nothing*")
        assert nomatch.returncode == 1 and "no connected minion matches" in nomatch.stderr

        minions["web2"].daemon.signal(signal.SIGSTOP)
        try:
            gone = cli(master, "fire", "{}", "myco/y", "--node", "master", "--target", "*", "--timeout", "1")
        finally:
            minions["web2"].daemon.signal(signal.SIGCONT)
        lines = sorted(gone.stdout.splitlines())
        assert gone.returncode == 1 and "web2" in gone.stderr
        assert "db1: True" in lines and "web1: True" in lines and "web2: True" not in lines
    finally:
        for handle in handles.values():
            handle.destroy()


def test_presence_follows_heartbeats(site):
    master = site.master(auto_accept=True, presence_events=True, loop_interval=0.3)
    master.start()
    minion = site.minion("m1")
    with event.get_event("master", opts=master.opts()) as bus:
        minion.start()
        wait_link(minion, "accept")
        change = bus.get_event(wait=5, tag="salt/presence/change")
        assert change == {**change, "new": ["m1"], "lost": []}
        assert "m1" in bus.get_event(wait=5, tag="salt/presence/present")["present"]
        minion.daemon.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_for(lambda: "m1" not in master_link(master)["present"], timeout=5, interval=0.01,
                     what="the frozen minion to leave")
            left_after = time.monotonic() - stopped
            lost = bus.get_event(wait=5, tag="salt/presence/change")
            assert lost["lost"] == ["m1"] and lost["new"] == []
        finally:
            minion.daemon.signal(signal.SIGCONT)
        # Two heartbeat intervals (0.6 s), plus room for a busy 2-core machine; a minion that never
        # left (or only by a ZeroMQ timeout, 3 intervals later) would fail this.
        assert left_after < 2 * 0.3 + 1.0
        back = bus.get_event(wait=5, tag="salt/presence/change")
        assert back["new"] == ["m1"]


def test_a_frozen_master_is_noticed_and_the_link_comes_back(site):
    master, minion = site.linked()
    with event.get_event("master", opts=master.opts()) as bus:
        master.daemon.signal(signal.SIGSTOP)
        try:
            wait_link(minion, "connecting", timeout=5)
            relay(minion, ("myco/while-frozen", {"n": 1}))
        finally:
            master.daemon.signal(signal.SIGCONT)
        # ZeroMQ's own heartbeat or the link's ping, whichever notices first.
        assert "lost the connection to the master" in minion.daemon.log or "has not answered" in minion.daemon.log
        wait_link(minion, "accept")
        assert bus.get_event(wait=5, tag="myco/while-frozen")["data"] == {"n": 1}
        assert bus.get_event(wait=0.5, tag="myco/while-frozen") is None
