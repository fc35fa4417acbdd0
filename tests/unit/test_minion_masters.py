"""A minion's several masters without sockets: the shared spool's cursors, hot and failover, failback, intake."""
from __future__ import annotations

import msgpack
import pytest

from eventbus import config
from eventbus.daemon.link import minion_session as ms
from eventbus.daemon.link import protocol
from eventbus.daemon.link.minion_masters import Close, MinionMasters
from eventbus.daemon.link.spool import Spool
from eventbus.errors import InvalidEventError

HEARTBEAT = 1.0
KEY = "k" * 40


def event(tag: str, **data: object) -> bytes:
    return tag.encode() + b"\x00" + msgpack.packb(data)


def load(tmp_path, **keys) -> config.MinionConfig:
    lines = "".join(f"{k}: {v}\n" for k, v in keys.items())
    (tmp_path / "minion").write_text(f"root_dir: {tmp_path}\nid: web1\nheartbeat_interval: {HEARTBEAT}\n"
                                     f"spool_max_events: 100\nmax_event_size: 4096\n{lines}")
    return config.load(config.MinionConfig, tmp_path / "minion")


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool", max_events=100)
    yield s
    s.close()


def masters(settings, spool, now: float = 0.0) -> MinionMasters:
    count = len(settings.masters)
    return MinionMasters(settings, spool, b"P" * 40, [KEY] * count, ["pin"] * count, now)


def welcome(m: MinionMasters, index: int, now: float, last: int = 0) -> list:
    session = m.sessions[index]
    session.handshake_succeeded(now)
    return session.receive(protocol.welcome("accept", last, HEARTBEAT), now)


def drain(session: ms.MinionSession) -> list[int]:
    """The seqs the session sends now."""
    out: list[int] = []
    while (batch := session.next_batch()) is not None:
        first, _floor = protocol.parse(batch.frames).value
        out += range(first, batch.last + 1)
        session.batch_sent(batch.last)
    return out


def addressed(actions: list, kind: type) -> list:
    return [index for index, action in actions if type(action) is kind]


def test_hot_sends_every_event_to_every_master_and_keeps_it_until_all_have_it(tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b, c]"), spool)
    assert m.hot and addressed(m.start(0.0), ms.Connect) == [0, 1, 2]
    for index in range(3):
        welcome(m, index, 0.1)
    first = spool.next_seq
    actions = m.intake([event("myco/e", n=n) for n in range(3)])
    assert addressed(actions, ms.Pump) == [0, 1, 2]
    assert [drain(s) for s in m.sessions] == [[first, first + 1, first + 2]] * 3
    m.sessions[0].receive(protocol.ack(first + 2), 0.2)
    m.sessions[1].receive(protocol.ack(first + 2), 0.2)
    assert len(spool) == 3, "master c has not acknowledged: the spool keeps them"
    m.sessions[2].receive(protocol.ack(first + 1), 0.2)
    assert len(spool) == 1 and spool.head == first + 1
    status = m.status()
    assert status["state"] == "accept" and [x["pending"] for x in status["masters"]] == [0, 0, 1]
    assert all(x["live"] for x in status["masters"])


def test_hot_a_master_that_comes_back_gets_what_it_missed_and_the_others_nothing_twice(tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b]"), spool)
    m.start(0.0)
    welcome(m, 0, 0.1)  # b is away
    first = spool.next_seq
    m.intake([event("myco/e", n=n) for n in range(4)])
    assert drain(m.sessions[0]) == list(range(first, first + 4)) and drain(m.sessions[1]) == []
    m.sessions[0].receive(protocol.ack(first + 3), 0.2)
    assert len(spool) == 4
    welcome(m, 1, 5.0, last=first - 1)
    assert drain(m.sessions[1]) == list(range(first, first + 4)) and drain(m.sessions[0]) == []


def test_failover_relays_to_one_master_and_moves_on_after_one_and_a_half_intervals_of_silence(tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b, c]", master_type="failover", master_alive_interval=2), spool)
    assert not m.hot and addressed(m.start(0.0), ms.Connect) == [0]
    welcome(m, 0, 0.1)
    first = spool.next_seq
    m.intake([event("myco/e", n=n) for n in range(5)])
    assert drain(m.sessions[0]) == list(range(first, first + 5))
    m.sessions[0].receive(protocol.ack(first + 1), 0.5)
    assert len(spool) == 3, "what the live master acknowledged is delivered"
    assert m.check(3.5) == [], "2.9 s of silence: within 1.5 intervals"
    moved = m.check(3.7)
    assert addressed(moved, Close) == [0] and addressed(moved, ms.Connect) == [1]
    assert "moving from the master at a:4506 to the master at b:4506" in moved[0][1].message
    assert m.live == 1 and m.sessions[0].state is ms.LinkState.CONNECTING and not m.sessions[0].linked
    welcome(m, 1, 4.0)
    assert drain(m.sessions[1]) == list(range(first + 2, first + 5)), "from the first event a had not acknowledged"
    assert m.check(5.0) == []
    # b dies too, then c; after c the list starts again at a.
    assert addressed(m.check(7.1), ms.Connect) == [2]
    assert addressed(m.check(10.2), ms.Connect) == [0]
    assert m.sessions[0].relaying and not m.sessions[2].linked


def test_failover_a_first_master_that_never_answers_is_left_for_the_second(tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b]", master_type="failover", master_alive_interval=1), spool)
    m.start(0.0)  # a never completes a handshake
    assert m.check(1.4) == []
    assert addressed(m.check(1.6), ms.Connect) == [1]
    welcome(m, 1, 1.7)
    m.intake([event("myco/e")])
    assert len(drain(m.sessions[1])) == 1 and m.status()["masters"][1]["live"]


def test_failback_watches_the_earlier_master_and_returns_once_it_accepts(tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b]", master_type="failover", master_alive_interval=1,
                     master_failback="true"), spool)
    m.start(0.0)
    welcome(m, 0, 0.1)
    moved = m.check(2.0)
    # a is closed and linked afresh (watched): only a new welcome brings it back.
    assert addressed(moved, Close) == [0] and addressed(moved, ms.Connect) == [0, 1]
    assert m.linked() == [0, 1] and not m.sessions[0].relaying and m.sessions[1].relaying
    welcome(m, 1, 2.1)
    first = spool.next_seq
    m.intake([event("myco/e", n=n) for n in range(2)])
    assert drain(m.sessions[0]) == [], "a watched master is not sent to"
    assert drain(m.sessions[1]) == [first, first + 1]
    m.sessions[1].receive(protocol.ack(first), 2.2)
    assert m.check(2.3) == []
    welcome(m, 0, 3.0, last=first - 5)
    back = m.check(3.1)
    assert "master_failback" in back[0][1].message and m.live == 0
    assert addressed(back, ms.Pump) == [0] and addressed(back, Close) == [1]
    assert drain(m.sessions[0]) == [first + 1], "from the first event b had not acknowledged"


def test_intake_refuses_reserved_and_bad_events_once_for_all_masters(tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b]"), spool)
    m.start(0.0)
    actions = m.intake([event("salt/auth", x=1), event("salt/minion/other/start"), event("salt/minion/web1/x")])
    refusals = [a for index, a in actions if index is None]
    assert [type(a) for a in refusals] == [ms.Refuse, ms.Refuse] and len(spool) == 1
    assert addressed(actions, ms.Pump) == [0, 1]
    with pytest.raises(InvalidEventError, match="reserved for the master"):
        m.relay({"tag": "salt/key", "data": {}})
    with pytest.raises(ValueError):
        m.relay({"tag": "", "data": {}})
    result, _ = m.relay({"tag": "myco/ok", "data": {"x": 1}})
    assert result == {"seq": spool.next_seq - 1, "spooled": 2, "master": "connecting"}


def test_a_full_spool_drops_the_oldest_and_says_so(tmp_path):
    settings = load(tmp_path, master="a", spool_max_events=10)
    spool = Spool(tmp_path / "spool", max_events=10)
    try:
        m = masters(settings, spool)
        m.intake([event("myco/e", n=n) for n in range(8)])
        actions = m.intake([event("myco/e", n=n) for n in range(8, 12)])
        refused = [a for index, a in actions if index is None]
        assert len(refused) == 1 and "dropped the 2 oldest" in refused[0].message
        assert m.status()["spooled"] == 10 and m.status()["dropped"] == 2
    finally:
        spool.close()


def test_one_master_is_the_hot_case_and_answers_as_before(tmp_path, spool):
    m = masters(load(tmp_path, master="a"), spool)
    m.start(0.0)
    welcome(m, 0, 0.1)
    status = m.status()
    assert status["state"] == "accept" and status["master_key"] == KEY and len(status["masters"]) == 1
    assert set(status) >= {"spooled", "dropped", "head", "next_seq"}


def test_hot_a_full_spool_names_the_masters_that_had_not_acknowledged_what_it_dropped(tmp_path):
    settings = load(tmp_path, master="[a, b]", spool_max_events=10)
    spool = Spool(tmp_path / "spool", max_events=10)
    try:
        m = masters(settings, spool)
        m.start(0.0)
        welcome(m, 0, 0.1)
        m.intake([event("myco/e", n=n) for n in range(8)])
        m.sessions[0].receive(protocol.ack(spool.next_seq - 1), 0.2)
        actions = m.intake([event("myco/e", n=n) for n in range(8, 12)])
        refused = [a for index, a in actions if index is None]
        assert len(refused) == 1 and "dropped the 2 oldest events (not acknowledged by b:4506)" in refused[0].message
    finally:
        spool.close()


def test_failover_a_hung_master_is_left_though_its_connection_was_rebuilt_meanwhile(tmp_path, spool):
    """The session rebuilds a silent master's connection after 2 heartbeats + 0.5 s; that is no answer."""
    m = masters(load(tmp_path, master="[a, b]", master_type="failover", master_alive_interval=4), spool)
    m.start(0.0)
    welcome(m, 0, 0.1)
    assert m.sessions[0].heartbeat == 1.0
    rebuilt = m.tick(2.7)  # silent since 0.1: over 2 heartbeats + 0.5, so the connection is rebuilt
    assert addressed(rebuilt, ms.Connect) == [0]
    assert m.check(6.0) == [], "5.9 s of silence: within 1.5 intervals"
    assert addressed(m.check(6.2), ms.Connect) == [1], "6.1 s since the last answer, the rebuild at 2.7 s aside"


def test_failover_a_master_that_rejects_the_minion_is_left_like_a_silent_one_but_a_pending_one_is_not(
        tmp_path, spool):
    m = masters(load(tmp_path, master="[a, b]", master_type="failover", master_alive_interval=2), spool)
    m.start(0.0)
    session = m.sessions[0]
    session.handshake_succeeded(0.1)
    session.receive(protocol.welcome("pend", 0, HEARTBEAT), 0.2)
    for now in (1.0, 2.0, 3.0, 4.0):
        session.receive(protocol.PONG_MESSAGE, now)
        assert m.check(now) == [], "pending: the operator may accept it"
    session.receive(protocol.welcome("reject", 0, HEARTBEAT), 4.1)
    session.receive(protocol.PONG_MESSAGE, 6.5)
    assert m.check(6.9) == [], "rejected 2.8 s ago: within 1.5 intervals"
    moved = m.check(7.2)
    assert addressed(moved, ms.Connect) == [1] and "answered 'reject' to this minion for 3.1 s" in moved[0][1].message
