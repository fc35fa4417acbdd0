"""The per-minion relay budget without sockets: the master refuses a batch over it unread and takes it later;
the minion pauses, resends from its spool and never spins; everything arrives once, in order."""
from __future__ import annotations

import msgpack
import pytest
import zmq

from eventbus import config, keys
from eventbus.daemon.link import master_session as mast
from eventbus.daemon.link import minion_session as mins
from eventbus.daemon.link import protocol
from eventbus.daemon.link.relaystream import RelayBudget, RelaySeqs
from eventbus.daemon.link.spool import Spool

HEARTBEAT = 1.0
ROUTE = b"\x00route-1"


def event(tag: str, **data: object) -> bytes:
    return tag.encode() + b"\x00" + msgpack.packb(data)


def master(tmp_path, limit: int) -> mast.MasterSessions:
    return mast.MasterSessions(keys.KeyStore(tmp_path / "pki"), RelaySeqs(tmp_path / "relay"), heartbeat=HEARTBEAT,
                               auto_accept=True, max_event_size=4096, relay_rate_limit=limit)


def answers(actions: list) -> list[tuple[bytes, int]]:
    return [(m.kind, m.value) for m in (protocol.parse(a.frames) for a in actions if isinstance(a, mast.Send))]


def published(actions: list) -> list[int]:
    return [msgpack.unpackb(frame.partition(b"\x00")[2])["data"]["n"]
            for a in actions if isinstance(a, mast.PublishFrames) for frame in a.frames]


def refusals(actions: list) -> list[str]:
    return [a.kind for a in actions if isinstance(a, mast.Refuse)]


def batch(m: mast.MasterSessions, key: str, first: int, count: int, now: float) -> list:
    frames = [event("myco/e", n=n) for n in range(first, first + count)]
    return m.receive(ROUTE, key, protocol.events(first, first - 1 if first == 1 else 0, frames), now)


def test_a_batch_over_the_budget_is_refused_unread_and_taken_once_the_bucket_refills(tmp_path):
    m = master(tmp_path, limit=100)  # 100 events/s, 200 at once
    key = zmq.curve_keypair()[0].decode()
    m.receive(ROUTE, key, protocol.hello("web1"), 0.0)
    assert published(batch(m, key, 1, 100, 0.0)) == list(range(1, 101))
    assert published(batch(m, key, 101, 100, 0.0)) == list(range(101, 201))
    over = batch(m, key, 201, 100, 0.0)
    assert published(over) == [] and answers(over) == [(protocol.RESEND, 200)] and refusals(over) == ["budget"]
    assert m.relayed == 200 and m.throttled == 1 and RelaySeqs(tmp_path / "relay").load("web1") == 200
    # A hello again does not refill it: the budget is the id's.
    m.receive(ROUTE, key, protocol.hello("web1"), 0.0)
    assert published(batch(m, key, 201, 100, 0.0)) == [] and m.throttled == 2
    # A second later 100 events' worth came back: the same batch is taken, once.
    taken = batch(m, key, 201, 100, 1.0)
    assert published(taken) == list(range(201, 301)) and answers(taken) == [(protocol.ACK, 300)]
    assert refusals(taken) == []


def test_another_minion_keeps_its_own_budget(tmp_path):
    m = master(tmp_path, limit=100)
    rogue, honest = (zmq.curve_keypair()[0].decode() for _ in range(2))
    m.receive(ROUTE, rogue, protocol.hello("rogue"), 0.0)
    m.receive(ROUTE, honest, protocol.hello("web1"), 0.0)
    for first in range(1, 1001, 100):
        batch(m, rogue, first, 100, 0.1)
    assert published(batch(m, honest, 1, 100, 0.1)) == list(range(1, 101))


def test_a_limit_of_0_takes_everything(tmp_path):
    m = master(tmp_path, limit=0)
    key = zmq.curve_keypair()[0].decode()
    m.receive(ROUTE, key, protocol.hello("web1"), 0.0)
    for first in range(1, 100_001, 100):
        actions = batch(m, key, first, 100, 0.0)
        assert answers(actions) == [(protocol.ACK, first + 99)]
    assert m.relayed == 100_000 and m.throttled == 0


def test_the_bucket_goes_into_debt_for_a_batch_bigger_than_it():
    budget = RelayBudget(10, 20, now=0.0)
    assert budget.take(100, 0.0), "a batch bigger than the bucket still gets through ..."
    assert not budget.take(1, 5.0), "... and then the minion waits for the debt (80 events at 10/s)"
    assert budget.take(100, 8.1)


# -- the minion ----------------------------------------------------------------------------------------------


@pytest.fixture
def minion(tmp_path):
    (tmp_path / "minion").write_text(f"root_dir: {tmp_path}\nid: web1\nheartbeat_interval: {HEARTBEAT}\n")
    spool = Spool(tmp_path / "spool", max_events=1_000_000)
    session = mins.MinionSession(config.load(config.MinionConfig, tmp_path / "minion"), spool, b"P" * 40,
                                 "k" * 40, 0.0)
    session.start(0.0)
    session.handshake_succeeded(0.0)
    session.receive(protocol.welcome("accept", 0, HEARTBEAT), 0.0)
    yield session
    spool.close()


def pump(session: mins.MinionSession) -> list[list[bytes]]:
    out = []
    while (b := session.next_batch()) is not None:
        out.append(b.frames)
        session.batch_sent(b.last)
    return out


def test_a_throttled_minion_pauses_once_per_refusal_and_backs_off_while_refused(minion):
    minion.spool.append([event("myco/e", n=n) for n in range(1000)])
    in_flight = pump(minion)
    assert len(in_flight) == 10
    head = minion.spool.head
    # The master took the first two batches and refused the third: the seven after it are gaps to it.
    minion.receive(protocol.ack(head + 100), 0.0)
    minion.receive(protocol.ack(head + 200), 0.0)
    first = minion.receive(protocol.resend(head + 200), 0.0)
    assert [type(a) for a in first] == [mins.ResumeAfter] and first[0].delay == mins.BACKOFF_FIRST
    for _ in range(7):
        assert minion.receive(protocol.resend(head + 200), 0.0) == [], "answers to what was in flight: no new pause"
    assert pump(minion) == [], "nothing is sent while paused"
    minion.resume()
    again = pump(minion)
    assert len(again) == 1 and protocol.parse(again[0]).value[0] == head + 201, "one batch, from the refused one"
    delays = []
    for _ in range(8):  # refused again and again: the pause doubles up to BACKOFF_MAX, one batch at a time
        delays.append(minion.receive(protocol.resend(head + 200), 0.0)[0].delay)
        minion.resume()
        assert len(pump(minion)) == 1
    assert delays == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5, 0.5]
    # Taken at last: the pause is reset, and the window doubles with each ack.
    minion.receive(protocol.ack(head + 300), 0.0)
    assert len(pump(minion)) == 2
    assert minion.receive(protocol.resend(head + 300), 0.0)[0].delay == mins.BACKOFF_FIRST


def test_a_throttled_stream_arrives_whole_in_order_and_once(tmp_path, minion):
    """A minion and a master with a budget of 500 events/s, answers carried by hand, time driven: 3,000 events."""
    m = master(tmp_path, limit=500)
    key = zmq.curve_keypair()[0].decode()
    m.receive(ROUTE, key, protocol.hello("web1"), 0.0)
    minion.spool.append([event("myco/e", n=n) for n in range(3000)])
    now, got, messages = 0.0, [], 0
    wake: float | None = None
    queue = pump(minion)
    while len(got) < 3000 and now < 60:
        if not queue:
            assert wake is not None, "stalled: nothing in flight and no pause to wait for"
            now, wake = wake, None
            minion.resume()
            queue = pump(minion)
            continue
        frames = queue.pop(0)
        messages += 1
        for action in m.receive(ROUTE, key, frames, now):
            if isinstance(action, mast.PublishFrames):
                got += [msgpack.unpackb(f.partition(b"\x00")[2])["data"]["n"] for f in action.frames]
            elif isinstance(action, mast.Send):
                for reply in minion.receive(action.frames, now):
                    if isinstance(reply, mins.ResumeAfter):
                        assert wake is None
                        wake = now + reply.delay
        queue += pump(minion)
    assert got == list(range(3000))
    assert 3.0 < now < 12, f"1,000 at once, then 500 a second: {now:.2f} s"
    assert messages < 300, f"{messages} batches sent for 30: the minion spins"
