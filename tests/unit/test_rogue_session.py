"""The master's link machine against an accepted minion that misbehaves: refused, named, never crashed."""
from __future__ import annotations

import msgpack
import zmq

from eventbus.daemon.link import protocol
from eventbus.daemon.link import master_session as ms
from eventbus.daemon.link.relaystream import RelaySeqs
from eventbus import keys

ROUTE = b"\x00rogue"


def machine(tmp_path, auto_accept: bool = True) -> ms.MasterSessions:
    return ms.MasterSessions(keys.KeyStore(tmp_path / "pki"), RelaySeqs(tmp_path / "relay"), heartbeat=1.0,
                             auto_accept=auto_accept, max_event_size=4096)


def event(tag: str, **data: object) -> bytes:
    return tag.encode() + b"\x00" + msgpack.packb(data)


def accepted(m: ms.MasterSessions, minion_id: str = "rogue") -> str:
    key = zmq.curve_keypair()[0].decode()
    m.receive(ROUTE, key, protocol.hello(minion_id), 0.0)
    return key


def refusals(actions: list) -> list[tuple[str, str]]:
    return [(a.kind, a.who) for a in actions if isinstance(a, ms.Refuse)]


def published(actions: list) -> list[bytes]:
    return [frame for a in actions if isinstance(a, ms.PublishFrames) for frame in a.frames]


def test_seqs_past_the_largest_u64_are_refused_not_a_crash(tmp_path):
    m = machine(tmp_path)
    key = accepted(m)
    actions = m.receive(ROUTE, key, protocol.events(2 ** 64 - 1, 2 ** 64 - 2, [event("a/b"), event("a/c")]), 1.0)
    assert refusals(actions) == [("protocol", "rogue")] and "'rogue'" in actions[0].message
    assert published(actions) == []
    (tmp_path / "relay" / "rogue").write_bytes(b"%d" % 2 ** 64)
    assert RelaySeqs(tmp_path / "relay").load("rogue") == 0, "a seq no ack can carry is not taken from disk"


def test_a_batch_bigger_than_a_minion_sends_is_refused_whole(tmp_path):
    m = machine(tmp_path)
    key = accepted(m)
    for frames in ([event("a/b", n=n) for n in range(5000)], [event("a/b", pad="x" * 3000)] * 200):
        actions = m.receive(ROUTE, key, protocol.events(1, 0, frames), 1.0)
        assert refusals(actions) == [("oversize", "rogue")] and published(actions) == []
    # Its seqs were not used: the same events in batches of the allowed size are new.
    small = [event("a/b", n=n) for n in range(protocol.MAX_BATCH_EVENTS)]
    assert len(published(m.receive(ROUTE, key, protocol.events(1, 0, small), 2.0))) == protocol.MAX_BATCH_EVENTS


def test_refused_tags_and_events_are_kinds_of_their_own_named_by_the_minion(tmp_path):
    m = machine(tmp_path)
    key = accepted(m)
    actions = m.receive(ROUTE, key, protocol.events(1, 0, [event("salt/key"), event("salt/minion/other/x"),
                                                            b"no-nul", event("a/ok")]), 1.0)
    assert refusals(actions) == [("tag", "rogue"), ("tag", "rogue"), ("relay", "rogue")]
    assert all("minion 'rogue'" in a.message for a in actions if isinstance(a, ms.Refuse))
    assert [msgpack.unpackb(f.partition(b"\x00")[2])["id"] for f in published(actions)] == ["rogue"]


def test_garbage_from_an_accepted_minion_names_it(tmp_path):
    m = machine(tmp_path)
    key = accepted(m)
    for frames in ([b"gossip", b"x"], [protocol.EVENTS, b"short"], protocol.ack(1)):
        actions = m.receive(ROUTE, key, frames, 1.0)
        assert refusals(actions) == [("protocol", "rogue")] and "minion 'rogue'" in actions[0].message


def test_a_replay_below_the_minions_own_spool_head_is_refused_and_publishes_nothing_twice(tmp_path):
    m = machine(tmp_path)
    key = accepted(m)
    frames = [event("a/b", n=n) for n in range(5)]
    assert len(published(m.receive(ROUTE, key, protocol.events(101, 100, frames), 1.0))) == 5
    assert len(published(m.receive(ROUTE, key, protocol.events(106, 105, frames[:1]), 1.0))) == 1
    for floor in (0, 105):
        actions = m.receive(ROUTE, key, protocol.events(101, floor, frames), 1.0)
        assert refusals(actions) == [("replay", "rogue")] and published(actions) == []
    # A resend after a lost ack (from the minion's own head) is no replay.
    assert refusals(m.receive(ROUTE, key, protocol.events(106, 105, frames[:1]), 1.0)) == []


def test_claiming_another_minions_id_is_refused_and_named_by_the_claimer(tmp_path):
    m = machine(tmp_path)
    accepted(m, "web1")
    key = accepted(m)
    for _ in range(3):
        actions = m.receive(ROUTE, key, protocol.hello("web1"), 1.0)
        claim, = (a for a in actions if isinstance(a, ms.Refuse))
        assert (claim.kind, claim.who) == ("claim", "rogue")
        assert "minion 'rogue'" in claim.message and "'web1'" in claim.message
    actions = m.receive(ROUTE, key, protocol.events(1, 0, [event("a/b")]), 1.0)
    assert refusals(actions) == [("unaccepted", "rogue")] and "minion 'rogue'" in actions[0].message
    assert m.sessions[key].minion_id == "web1" and not m.sessions[key].accepted
    assert m.store.lookup("web1")[0] == keys.ACCEPTED


def test_acknowledging_a_fire_not_sent_to_it_is_refused_and_counts_for_nothing(tmp_path):
    m = machine(tmp_path)
    target_key = accepted(m, "web1")
    key = accepted(m)
    job, _ = m.fire("web1", event("a/cmd"), 1.0)
    for job_id in (job["job"], job["job"] + 1):
        assert refusals(m.receive(ROUTE, key, protocol.fired(job_id), 1.1)) == [("fired", "rogue")]
    assert m.fire_jobs.status(job["job"])["acked"] == []
    assert refusals(m.receive(b"web1", target_key, protocol.fired(job["job"]), 1.2)) == []
    assert m.fire_jobs.status(job["job"])["acked"] == ["web1"]
    m.fire_jobs.expire(500.0)
    assert refusals(m.receive(b"web1", target_key, protocol.fired(job["job"]), 500.1)) == [], "late, not a lie"


def test_a_pending_minion_saying_hello_again_is_noted_once(tmp_path):
    m = machine(tmp_path, auto_accept=False)
    key = zmq.curve_keypair()[0].decode()
    notes = [a for _ in range(5) for a in m.receive(ROUTE, key, protocol.hello("web9"), 0.0)
             if isinstance(a, ms.Note)]
    assert len(notes) == 1 and "'web9' is pending" in notes[0].message
