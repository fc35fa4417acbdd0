"""Failover (``master_type: failover``): one master at a time, the next when it dies, back with ``master_failback``.

Salt loses the events of a failover minion whose master dies
(saltstack/salt#43262, #21749). Here every event a minion relayed is on the
master it moved to, or was taken by the dead one before it died (its journal
says so), and each master has each minion's events in the order they were sent.
"""
from __future__ import annotations

import pytest

from tests.fleetkit import Fleet, RelayStream, log_of, masters_of, name_of, numbers, unanswered_item, wait_live
from tests.helpers import failed, wait_for

ALIVE = 1.0  # master_alive_interval: the minion moves on after 1.5 s of silence (a loaded machine stalls)


@pytest.fixture
def fleet(request):
    made = Fleet()
    yield made
    made.cleanup(show_logs=failed(request))


def failover_minion(fleet: Fleet, minion_id: str, masters: list, **keys):
    return fleet.minion(minion_id, masters, master_type="failover", master_alive_interval=ALIVE, **keys)


def drained(minion) -> bool:
    """Every event the minion relayed is acknowledged by the master it relays to."""
    state = masters_of(minion)
    return all(line["pending"] == 0 for line in state.values() if line["live"])


def assert_in_order(got: dict[str, list[int]], where: str) -> None:
    for minion_id, seen in got.items():
        assert seen == sorted(set(seen)), f"{minion_id}'s events out of order or repeated on {where}: {seen}"


def took(master, tag: str, ids: list[str], at_least: int) -> bool:
    """The master has taken at least ``at_least`` ``tag`` events from each minion of ``ids``."""
    got = numbers(master, tag)
    return all(len(got.get(minion_id, [])) >= at_least for minion_id in ids)


def test_sigkill_of_the_live_master_mid_stream_loses_nothing(fleet) -> None:
    first, second = fleet.master(), fleet.master()
    minions = [failover_minion(fleet, f"m{i}", [first, second]) for i in (1, 2, 3)]
    ids = [minion.keys["id"] for minion in minions]
    for minion in minions:
        wait_live(minion, first)
    streams = [RelayStream(minion, "myco/stream", every=0.01).start() for minion in minions]
    try:
        # Mid-stream: the first master has taken some of each minion's events, and more are coming.
        wait_for(lambda: took(first, "myco/stream", ids, 30), 30, what="the first master to take 30 events of each")
        first.daemon.kill()
        for minion in minions:
            wait_live(minion, second)
        wait_for(lambda: took(second, "myco/stream", ids, 30), 30, what="the second master to take 30 of each")
    finally:
        for stream in streams:
            stream.stop()
    for minion in minions:
        wait_for(lambda minion=minion: drained(minion), 30, what=f"{minion.keys['id']}'s spool to drain")
    on_first, on_second = numbers(first, "myco/stream"), numbers(second, "myco/stream")
    assert_in_order(on_first, "the dead master")
    assert_in_order(on_second, "the surviving master")
    for minion, stream in zip(minions, streams):
        minion_id = minion.keys["id"]
        before, after = on_first.get(minion_id, []), on_second.get(minion_id, [])
        missing = sorted(set(stream.numbers) - set(before) - set(after))
        assert not missing, f"{minion_id}'s events {missing} are on neither master"
        # The second master goes on from the first event the first had not acknowledged: no gap between them.
        assert after[0] <= before[-1] + 1, (before[-5:], after[:5])
        assert (f"moving from the master at {name_of(first)} to the master at {name_of(second)}"
                in log_of(minion)), log_of(minion)[-2000:]


def test_failback_returns_to_the_first_master_and_loses_nothing(fleet) -> None:
    first, second = fleet.master(), fleet.master()
    minion = failover_minion(fleet, "m1", [first, second], master_failback=True)
    wait_live(minion, first)
    RelayStream(minion, "myco/fb", 20, every=0).start().join()
    wait_for(lambda: drained(minion), 20, what="the first 20 acknowledged")

    first.daemon.kill()
    wait_live(minion, second)
    RelayStream(minion, "myco/fb", 20, every=0, first=20).start().join()
    wait_for(lambda: drained(minion), 20, what="the second 20 acknowledged")
    lines = masters_of(minion)
    assert lines[name_of(first)]["linked"] and not lines[name_of(first)]["live"], "the first master is not watched"

    first.start()  # the same config, ports and keys
    wait_live(minion, first, timeout=30)
    RelayStream(minion, "myco/fb", 20, every=0, first=40).start().join()
    wait_for(lambda: drained(minion), 20, what="the third 20 acknowledged")
    assert numbers(first, "myco/fb") == {"m1": list(range(20)) + list(range(40, 60))}
    assert numbers(second, "myco/fb") == {"m1": list(range(20, 40))}
    assert "it answers again (master_failback)" in log_of(minion)


def test_two_moves_mid_stream_lose_nothing(fleet) -> None:
    """Killed, then back (failback): the stream goes to the first master, the second, the first again."""
    first, second = fleet.master(), fleet.master()
    minions = [failover_minion(fleet, f"m{i}", [first, second], master_failback=True) for i in (1, 2)]
    ids = [minion.keys["id"] for minion in minions]
    for minion in minions:
        wait_live(minion, first)
    streams = [RelayStream(minion, "myco/moves", every=0.01).start() for minion in minions]
    try:
        wait_for(lambda: took(first, "myco/moves", ids, 20), 30, what="the first master to take 20 events of each")
        first.daemon.kill()
        for minion in minions:
            wait_live(minion, second)
        wait_for(lambda: took(second, "myco/moves", ids, 20), 30, what="the second master to take 20 of each")
        taken = {minion_id: len(seen) for minion_id, seen in numbers(first, "myco/moves").items()}
        first.start()
        for minion in minions:
            wait_live(minion, first, timeout=30)
        wait_for(lambda: all(len(numbers(first, "myco/moves")[i]) >= taken[i] + 20 for i in ids), 30,
                 what="the first master, back, to take 20 more of each")
    finally:
        for stream in streams:
            stream.stop()
    for minion in minions:
        wait_for(lambda minion=minion: drained(minion), 30, what=f"{minion.keys['id']}'s spool to drain")
    on_first, on_second = numbers(first, "myco/moves"), numbers(second, "myco/moves")
    assert_in_order(on_first, "the first master")
    assert_in_order(on_second, "the second master")
    for minion_id, stream in zip(ids, streams):
        missing = sorted(set(stream.numbers) - set(on_first[minion_id]) - set(on_second[minion_id]))
        assert not missing, f"{minion_id}'s events {missing} are on neither master"
        assert on_first[minion_id][-1] == stream.numbers[-1], "the last events did not go back to the first master"


def test_without_failback_the_minion_stays_on_the_second_master(fleet) -> None:
    first, second = fleet.master(), fleet.master()
    minion = failover_minion(fleet, "m1", [first, second])
    wait_live(minion, first)
    first.daemon.kill()
    wait_live(minion, second)
    first.start()
    RelayStream(minion, "myco/stay", 10, every=0).start().join()
    wait_for(lambda: numbers(second, "myco/stay") == {"m1": list(range(10))}, 20, what="10 events on the second")
    assert live_name(minion) == name_of(second)
    assert not masters_of(minion)[name_of(first)]["linked"]
    assert numbers(first, "myco/stay") == {}


def live_name(minion) -> str:
    return next(name for name, line in masters_of(minion).items() if line["live"])


def test_a_first_master_that_never_answers_is_passed_over(fleet) -> None:
    never = unanswered_item()
    second = fleet.master()
    minion = failover_minion(fleet, "m1", [never, second], start=False)
    minion.start()
    RelayStream(minion, "myco/skip", 10, every=0).start().join()  # spooled before any master answers
    wait_live(minion, second)
    wait_for(lambda: numbers(second, "myco/skip") == {"m1": list(range(10))}, 20, what="10 events on the second")
    assert f"moving from the master at {name_of(never)} to the master at {name_of(second)}" in log_of(minion)
    wait_for(lambda: drained(minion), 20, what="the spool to drain")
    assert masters_of(minion)[name_of(never)]["state"] == "connecting"


def test_each_master_key_is_pinned_on_its_own(fleet) -> None:
    first, second = fleet.master(), fleet.master()
    minion = failover_minion(fleet, "m1", [first, second])
    wait_live(minion, first)
    first.daemon.kill()
    wait_live(minion, second)
    pki = minion.settings.pki_dir
    pinned = {path.name: path.read_text().strip() for path in (pki / "masters").iterdir()}
    own = {f"{name_of(m).replace(':', '_')}.pub": master_public_key(m) for m in (first, second)}
    assert pinned == own
    assert len(set(pinned.values())) == 2
    assert not (pki / "minion_master.pub").exists()


def master_public_key(master) -> str:
    """The master's own CURVE public key, from its key pair's files."""
    import zmq.auth

    public, _ = zmq.auth.load_certificate(master.settings.pki_dir / "master.key_secret")
    return public.decode()
