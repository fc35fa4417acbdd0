"""The minion's link machine without sockets: states, key pinning, the relay spool's batches, acks and resends."""
from __future__ import annotations

import logging

import msgpack
import pytest
import zmq

from eventbus.daemon.link import protocol
from eventbus.daemon.link import minion_session as ms
from eventbus.daemon.link.minion_session import LinkState
from eventbus.daemon.link.spool import Spool
from eventbus import config

HEARTBEAT = 1.0


def new_key() -> str:
    return zmq.curve_keypair()[0].decode()


def event(tag: str, **data: object) -> bytes:
    return tag.encode() + b"\x00" + msgpack.packb(data)


@pytest.fixture
def settings(tmp_path) -> config.MinionConfig:
    (tmp_path / "minion").write_text(f"root_dir: {tmp_path}\nid: web1\nmaster: 10.0.0.1\nheartbeat_interval: "
                                     f"{HEARTBEAT}\nspool_max_events: 10\nmax_event_size: 4096\n")
    return config.load(config.MinionConfig, tmp_path / "minion")


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool", max_events=10)
    yield s
    s.close()


def session(settings, spool, master_key: str | None = "k" * 40, now: float = 0.0) -> ms.MinionSession:
    return ms.MinionSession(settings, spool, b"P" * 40, master_key, now)


def kinds(actions: list) -> list[type]:
    return [type(a) for a in actions]


def sent(actions: list) -> list[protocol.Message]:
    return [protocol.parse(a.frames) for a in actions if isinstance(a, ms.Send)]


def accepted(settings, spool, last: int = 0) -> ms.MinionSession:
    """A session through connect, handshake and an accepting welcome."""
    s = session(settings, spool)
    assert kinds(s.start(0.0)) == [ms.Connect]
    s.handshake_succeeded(0.1)
    s.receive(protocol.welcome("accept", last, HEARTBEAT), 0.2)
    assert s.state is LinkState.ACCEPT
    return s


def drain(s: ms.MinionSession) -> list[tuple[int, int, int]]:
    """Take every batch the link would send now: (first seq, floor, last seq) each."""
    out = []
    while (b := s.next_batch()) is not None:
        first, floor = protocol.parse(b.frames).value
        out.append((first, floor, b.last))
        s.batch_sent(b.last)
    return out


def test_states_from_connect_to_accept(settings, spool):
    s = session(settings, spool)
    assert s.state is LinkState.CONNECTING and s.status()["state"] == "connecting"
    assert kinds(s.start(0.0)) == [ms.Connect]
    actions = s.handshake_succeeded(0.5)
    assert s.state is LinkState.HELLO and sent(actions) == [(protocol.HELLO, {"id": "web1"}, ())]
    actions = s.receive(protocol.welcome("pend", 0, HEARTBEAT), 0.6)
    assert s.state is LinkState.PEND and any(isinstance(a, ms.Note) and a.level == logging.WARNING for a in actions)
    assert s.next_batch() is None, "a pending minion sends nothing"
    actions = s.receive(protocol.welcome("accept", 0, 0.5), 0.7)
    assert s.state is LinkState.ACCEPT and kinds(actions)[-1] is ms.Pump
    assert s.heartbeat == 0.5, "the master's lower heartbeat wins"
    assert s.status()["state"] == "accept"


def test_first_contact_asks_for_the_key_pins_it_and_connects(settings, spool):
    s = session(settings, spool, master_key=None)
    assert kinds(s.start(0.0)) == [ms.Note, ms.AskKey]
    assert s.tick(1.0) == [], "no second ask within two heartbeats"
    assert kinds(s.tick(2.5)) == [ms.AskKey]
    assert kinds(s.key_offered([b"key", b"not a key"], 2.6)) == [ms.Note] and s.master_key is None
    key = new_key()
    actions = s.key_offered([b"key", key.encode()], 2.7)
    assert actions[0] == ms.PinKey(key) and kinds(actions)[-1] is ms.Connect
    assert s.master_key == key and s.linked and s.state is LinkState.CONNECTING


def test_a_changed_master_key_is_refused_and_never_pinned(settings, spool):
    pinned = new_key()
    s = session(settings, spool, master_key=pinned)
    s.start(0.0)
    failed = s.handshake_failed(1.0)
    assert kinds(failed) == [ms.Refuse, ms.AskKey]
    assert kinds(s.handshake_failed(2.0)) == [ms.Refuse], "the key offer is asked at most every 30 s"
    actions = s.key_offered([b"key", new_key().encode()], 2.1)
    assert kinds(actions) == [ms.Note] and actions[0].level == logging.ERROR
    assert "its public key changed from " + pinned in actions[0].message
    assert s.master_key == pinned
    assert s.key_offered([b"key", pinned.encode()], 2.2) == []


def test_relayed_events_go_in_batches_and_an_ack_frees_the_spool(settings, spool):
    s = accepted(settings, spool)
    first = spool.next_seq
    spool.append([event("myco/e", n=n) for n in range(3)])
    assert len(spool) == 3
    assert drain(s) == [(first, first - 1, first + 2)]
    assert drain(s) == [], "sent once until acked or resent"
    s.receive(protocol.ack(first + 2), 1.0)
    assert len(spool) == 0


def test_a_batch_without_an_ack_is_resent_after_two_heartbeats(settings, spool):
    s = accepted(settings, spool)
    first = spool.next_seq
    spool.append([event("myco/e", n=n) for n in range(2)])
    assert drain(s) == [(first, first - 1, first + 1)]
    s.receive(protocol.PONG_MESSAGE, 1.0)
    assert kinds(s.tick(1.0)) == [ms.Send, ms.Pump] and drain(s) == []
    s.receive(protocol.PONG_MESSAGE, 2.5)
    s.tick(2.5)  # no ack since 0.2: more than two heartbeats
    assert drain(s) == [(first, first - 1, first + 1)]


def test_resend_from_the_master_frees_what_it_has_and_sends_the_rest(settings, spool):
    s = accepted(settings, spool)
    first = spool.next_seq
    spool.append([event("myco/e", n=n) for n in range(5)])
    drain(s)
    actions = s.receive(protocol.resend(first + 1), 1.0)
    assert kinds(actions) == [ms.ResumeAfter] and len(spool) == 3
    assert drain(s) == [], "paused until resumed"
    assert kinds(s.resume()) == [ms.Pump]
    assert drain(s) == [(first + 2, first + 1, first + 4)]


def test_after_a_reconnect_the_welcome_says_where_to_resume(settings, spool):
    s = accepted(settings, spool)
    first = spool.next_seq
    spool.append([event("myco/e", n=n) for n in range(4)])
    drain(s)
    assert kinds(s.disconnected(1.0)) == [ms.Note] and s.state is LinkState.CONNECTING
    assert s.next_batch() is None
    s.handshake_succeeded(2.0)
    # The master got the first two before the cut (their ack was lost): resume after them.
    s.receive(protocol.welcome("accept", first + 1, HEARTBEAT), 2.1)
    assert drain(s) == [(first + 2, first + 1, first + 3)]


def test_a_silent_master_is_given_up_and_the_connection_rebuilt(settings, spool):
    s = accepted(settings, spool)
    actions = s.tick(1.0)
    assert sent(actions) == [(protocol.PING, None, ())]
    actions = s.tick(2.8)  # last heard at 0.2: over 2 heartbeats + 0.5
    assert kinds(actions) == [ms.Send, ms.Note, ms.Connect] and s.state is LinkState.CONNECTING
    assert kinds(s.tick(3.0)) == [ms.Pump], "no ping while connecting"


def test_who_means_say_hello_again(settings, spool):
    s = accepted(settings, spool)
    actions = s.receive(protocol.WHO_MESSAGE, 1.0)
    assert s.state is LinkState.HELLO and sent(actions) == [(protocol.HELLO, {"id": "web1"}, ())]
    assert s.next_batch() is None


def test_a_fire_from_the_master_goes_on_the_bus_and_is_acknowledged(settings, spool):
    s = accepted(settings, spool)
    frame = event("myco/cmd", x=1)
    actions = s.receive(protocol.fire(7, frame), 1.0)
    assert actions[0] == ms.PublishFrame(frame) and sent(actions) == [(protocol.FIRED, 7, ())]
    bad = s.receive(protocol.fire(8, b"myco/cmd\x00\x93\x01\x02\x03"), 1.1)
    assert kinds(bad) == [ms.Refuse]


def test_garbage_from_the_master_is_ignored_but_counts_as_a_sign_of_life(settings, spool):
    s = accepted(settings, spool)
    actions = s.receive([b"ack", b"123"], 5.0)
    assert kinds(actions) == [ms.Refuse] and s.last_heard == 5.0
    assert kinds(s.receive(protocol.ack(1), 5.1)) == [ms.Pump]
    assert kinds(s.receive(protocol.PING_MESSAGE, 5.2)) == [ms.Refuse], "a ping is the minion's to send"


def test_batches_go_in_one_frame_only_to_a_master_that_offers_it(settings, spool):
    s = accepted(settings, spool)
    spool.append([event("myco/e", n=n) for n in range(3)])
    batch = s.next_batch()
    assert batch is not None and batch.frames[0] == protocol.BATCH and len(batch.frames) == 3
    older = session(settings, spool)  # a master whose welcome does not say "packed"
    older.start(0.0)
    older.handshake_succeeded(0.1)
    older.receive([protocol.WELCOME, msgpack.packb({"result": "accept", "last": 0, "heartbeat": HEARTBEAT})], 0.2)
    batch = older.next_batch()
    assert batch is not None and batch.frames[0] == protocol.EVENTS and len(batch.frames) == 2 + 3
