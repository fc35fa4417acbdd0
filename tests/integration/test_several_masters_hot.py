"""Hot mode (``master_type: str`` with a list): a minion linked to every master at once, each master on its own.

Salt's multi-master sends ``event.send`` to every master and leaves what each
one does with it "undefined" (saltstack/salt#41252, #66933, #19963): here
each master gets every event exactly once, in order, and auth, start events,
presence and ``fire --target`` are each master's own.
"""
from __future__ import annotations

import signal

import pytest

from eventbus import event
from tests.fleetkit import (Fleet, RelayStream, collect, journal_events, link_state, log_of, masters_of, name_of,
                            numbers)
from tests.helpers import failed, run_cli, wait_for


@pytest.fixture
def fleet(request):
    made = Fleet(master_keys={"presence_events": True, "loop_interval": 0.3})
    yield made
    made.cleanup(show_logs=failed(request))


def pending(minion) -> list[int]:
    """Per master, the events it has yet to acknowledge."""
    return [line["pending"] for line in masters_of(minion).values()]


def present(master) -> list[str]:
    return link_state(master)["present"]


def all_accept(minion, count: int) -> dict:
    return wait_for(lambda: (lines := masters_of(minion)) and [l["state"] for l in lines.values()] == ["accept"] * count
                    and lines, 20, what=f"{minion.keys['id']} to be accepted by its {count} masters")


def test_an_event_sent_once_is_on_each_of_three_masters_exactly_once(fleet) -> None:
    masters = [fleet.master() for _ in range(3)]
    buses = [event.get_event("master", opts=m.opts()) for m in masters]
    try:
        minion = fleet.minion("m1", masters)
        for bus in buses:
            auth = bus.get_event(wait=20, tag="salt/auth")
            assert auth is not None and auth["act"] == "accept" and auth["id"] == "m1"
            start = bus.get_event(wait=20, tag="salt/minion/m1/start")
            assert start is not None and start["id"] == "m1" and "Minion m1 started" in start["data"]
        lines = all_accept(minion, 3)
        assert all(line["live"] for line in lines.values())
        assert len({line["master_key"] for line in lines.values()}) == 3, "each master has a key of its own"

        sent = run_cli("send", "myco/once", "n=1", "-c", str(minion.config_dir))
        assert sent.returncode == 0, sent.stderr
        for master, bus in zip(masters, buses):
            got = collect(bus, "myco/once", 1, wait=20)
            assert [e["data"]["data"] for e in got] == [{"n": "1"}], f"{master.keys['id']} did not get it"
            assert got[0]["data"]["id"] == "m1"
        # Each master has answered for it: a copy still on the way would show now.
        wait_for(lambda: pending(minion) == [0, 0, 0], 20, what="every master to acknowledge it")
        for master, bus in zip(masters, buses):
            assert bus.get_event(wait=1, tag="myco/once") is None, f"{master.keys['id']} got it twice"
            assert [d["data"] for _, d in journal_events(master, "myco/once")] == [{"n": "1"}]
    finally:
        for bus in buses:
            bus.destroy()


def test_a_stream_from_two_minions_reaches_each_master_once_in_order(fleet) -> None:
    masters = [fleet.master() for _ in range(3)]
    minions = [fleet.minion(f"m{i}", masters) for i in (1, 2)]
    for minion in minions:
        all_accept(minion, 3)
    streams = [RelayStream(minion, "myco/stream", 200, every=0.002).start() for minion in minions]
    for stream in streams:
        stream.join()
    for minion in minions:
        wait_for(lambda: pending(minion) == [0, 0, 0], 30,
                 what=f"every master to acknowledge {minion.keys['id']}'s events")
    for master in masters:
        assert numbers(master, "myco/stream") == {"m1": list(range(200)), "m2": list(range(200))}, master.keys["id"]


def test_fire_target_from_each_master_reaches_the_minion(fleet) -> None:
    masters = [fleet.master() for _ in range(3)]
    minion = fleet.minion("web1", masters)
    all_accept(minion, 3)
    with event.get_event("minion", opts=minion.opts()) as bus:
        for master in masters:
            # The master fires only to minions it counts present: wait for that, not for time.
            wait_for(lambda master=master: "web1" in present(master), 20,
                     what=f"web1 present on {master.keys['id']}")
            fired = run_cli("fire", f'{{"from": "{master.keys["id"]}"}}', "myco/deploy", "--node", "master",
                            "--target", "web*", "-c", str(master.config_dir))
            assert fired.returncode == 0 and fired.stdout.splitlines() == ["web1: True"], fired.stdout + fired.stderr
        got = collect(bus, "myco/deploy", 4, wait=3)
    assert [e["data"]["from"] for e in got] == ["master1", "master2", "master3"]


def test_presence_is_each_masters_own(fleet) -> None:
    masters = [fleet.master() for _ in range(2)]
    buses = [event.get_event("master", opts=m.opts()) for m in masters]
    try:
        minion = fleet.minion("m1", masters)
        for bus in buses:
            change = wait_for(lambda bus=bus: (e := bus.get_event(wait=1, tag="salt/presence/change")) and e, 20,
                              what="salt/presence/change")
            assert change["new"] == ["m1"] and change["lost"] == []
        # The minion stops answering: each master loses it, on its own heartbeats.
        minion.daemon.signal(signal.SIGSTOP)
        try:
            for master in masters:
                wait_for(lambda master=master: "m1" not in present(master), 20,
                         what=f"m1 to leave {master.keys['id']}'s present set")
        finally:
            minion.daemon.signal(signal.SIGCONT)
        for master in masters:
            wait_for(lambda master=master: "m1" in present(master), 20,
                     what=f"m1 back in {master.keys['id']}'s present set")
        # One master goes: the other still counts the minion present and gets its events.
        masters[0].daemon.kill()
        sent = run_cli("send", "myco/after", "n=1", "-c", str(minion.config_dir))
        assert sent.returncode == 0, sent.stderr
        assert collect(buses[1], "myco/after", 1, wait=20)[0]["data"]["data"] == {"n": "1"}
        assert "m1" in present(masters[1])
    finally:
        for bus in buses:
            bus.destroy()


def test_a_master_that_was_down_gets_every_event_it_missed(fleet) -> None:
    """Hot mode keeps an event in the spool until every master has it."""
    first, second = fleet.master(), fleet.master()
    minion = fleet.minion("m1", [first, second])
    all_accept(minion, 2)
    RelayStream(minion, "myco/held", 20, every=0).start().join()
    wait_for(lambda: pending(minion) == [0, 0], 20, what="both masters to acknowledge")
    second.daemon.kill()
    RelayStream(minion, "myco/held", 20, every=0, first=20).start().join()
    wait_for(lambda: numbers(first, "myco/held").get("m1") == list(range(40)), 20,
             what="the live master to get the second 20")
    lines = masters_of(minion)
    assert lines[name_of(second)]["pending"] == 20 and lines[name_of(first)]["pending"] == 0, lines
    second.start()
    wait_for(lambda: pending(minion) == [0, 0], 30, what="the master back to get what it missed")
    assert numbers(second, "myco/held") == {"m1": list(range(40))}
    assert numbers(first, "myco/held") == {"m1": list(range(40))}


def test_a_master_whose_key_changed_is_refused_and_the_others_go_on(fleet) -> None:
    first, second = fleet.master(), fleet.master()
    minion = fleet.minion("m1", [first, second])
    all_accept(minion, 2)
    second.stop()
    for made in second.settings.pki_dir.glob("master.key*"):
        made.unlink()  # a new key pair at the next start: another machine answering at the same address
    second.start()
    pinned = minion.settings.pki_dir / "masters" / f"127.0.0.1_{second.keys['ret_port']}.pub"
    wait_for(lambda: f"refusing the master at {name_of(second)}: its public key changed" in log_of(minion), 30,
             what="the minion to refuse the second master's new key")
    assert f"(pinned in {pinned})" in log_of(minion)
    RelayStream(minion, "myco/keys", 5, every=0).start().join()
    wait_for(lambda: numbers(first, "myco/keys") == {"m1": list(range(5))}, 20, what="5 events on the first")
    assert masters_of(minion)[name_of(second)]["state"] != "accept"
    assert numbers(second, "myco/keys") == {}
