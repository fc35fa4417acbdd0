"""The master's link machine without sockets: hello decisions, relay de-duplication and resend, presence, fires."""
from __future__ import annotations

import msgpack
import pytest
import zmq

from eventbus.daemon.link import protocol
from eventbus.daemon.link import master_session as ms
from eventbus.daemon.link.targetfires import FireJobs
from eventbus.daemon.link.relaystream import RelaySeqs
from eventbus import keys

HEARTBEAT = 1.0
ROUTE = b"\x00route-1"


def new_key() -> str:
    return zmq.curve_keypair()[0].decode()


def event(tag: str, **data: object) -> bytes:
    return tag.encode() + b"\x00" + msgpack.packb(data)


def machine(tmp_path, auto_accept: bool = True, fire_jobs: FireJobs | None = None) -> ms.MasterSessions:
    """A master's sessions on key and seq files in ``tmp_path`` (a second one there is the master restarted)."""
    return ms.MasterSessions(keys.KeyStore(tmp_path / "pki"), RelaySeqs(tmp_path / "relay"), heartbeat=HEARTBEAT,
                             auto_accept=auto_accept, max_event_size=4096, fire_jobs=fire_jobs)


def sent(actions: list, route: bytes = ROUTE) -> list[protocol.Message]:
    """The link messages the actions send to ``route``, parsed."""
    return [protocol.parse(a.frames) for a in actions if isinstance(a, ms.Send) and a.route == route]


def published(actions: list) -> list[tuple[str, dict]]:
    """(tag, data) of every event the actions put on the master bus, in order."""
    out = []
    for action in actions:
        if isinstance(action, ms.Publish):
            out.append((action.tag, action.data))
        elif isinstance(action, ms.PublishFrames):
            for frame in action.frames:
                tag, _, data = frame.partition(b"\x00")
                out.append((tag.decode(), msgpack.unpackb(data)))
    return out


def hello(m: ms.MasterSessions, key: str, minion_id: str, now: float = 0.0, route: bytes = ROUTE) -> list:
    return m.receive(route, key, protocol.hello(minion_id), now)


def batch(m: ms.MasterSessions, key: str, first: int, frames: list[bytes], floor: int = 0, now: float = 0.0) -> list:
    return m.receive(ROUTE, key, protocol.events(first, floor, frames), now)


def relayed(actions: list) -> list[int]:
    """The ``n`` of each relayed test event the actions published."""
    return [data["data"]["n"] for _, data in published(actions)]


def test_an_accepted_hello_fires_auth_welcomes_with_the_last_seq_and_announces_the_start(tmp_path):
    m = machine(tmp_path)
    key = new_key()
    actions = hello(m, key, "web1")
    assert [tag for tag, _ in published(actions)] == ["salt/auth", "salt/minion/web1/start"]
    assert published(actions)[0][1] == {"result": True, "act": "accept", "id": "web1", "pub": key}
    assert published(actions)[1][1]["data"].startswith("Minion web1 started at ")
    assert [(msg.kind, msg.value) for msg in sent(actions)] == [
        (protocol.WELCOME, {"result": "accept", "last": 0, "heartbeat": HEARTBEAT, "packed": True})]
    assert m.status() == {"sessions": 1, "accepted": 1, "present": ["web1"], "relayed": 0}


def test_a_pending_minion_relays_nothing_until_an_operator_accepts_it(tmp_path):
    m = machine(tmp_path, auto_accept=False)
    key = new_key()
    actions = hello(m, key, "web1")
    assert published(actions) == [("salt/auth", {"result": False, "act": "pend", "id": "web1", "pub": key})]
    assert sent(actions)[0].value["result"] == "pend"
    refused = batch(m, key, 1, [event("myco/a", n=1)])
    assert published(refused) == [] and [a.kind for a in refused] == ["unaccepted"]
    assert m.status()["present"] == [], "a pending minion is not present"

    change, = m.store.change("accept", "web1")
    actions = m.key_changed(change, 1.0)
    assert [tag for tag, _ in published(actions)] == ["salt/key", "salt/auth", "salt/minion/web1/start"]
    assert sent(actions)[0].value == {"result": "accept", "last": 0, "heartbeat": HEARTBEAT, "packed": True}
    assert relayed(batch(m, key, 1, [event("myco/a", n=1)])) == [1]


def test_a_batch_is_published_with_the_id_of_the_key_and_acked(tmp_path):
    m = machine(tmp_path)
    key = new_key()
    hello(m, key, "web1")
    # A fresh minion numbers from its clock; its floor (spool head) is the seq before its first.
    actions = batch(m, key, 101, [event("myco/a", n=1, id="forged"), event("myco/b", n=2)], floor=100)
    (tag, data), _ = published(actions)
    assert tag == "myco/a" and data["id"] == "web1" and data["data"] == {"n": 1, "id": "forged"}
    assert data["cmd"] == "_minion_event" and data["tag"] == "myco/a"
    assert [(msg.kind, msg.value) for msg in sent(actions)] == [(protocol.ACK, 102)]


def test_a_batch_resent_after_a_lost_ack_is_not_published_twice(tmp_path):
    m = machine(tmp_path)
    key = new_key()
    hello(m, key, "web1")
    frames = [event("myco/e", n=n) for n in range(1, 6)]
    assert relayed(batch(m, key, 1, frames[:3])) == [1, 2, 3]
    # The ack for 1..3 was lost: the minion resends 1..3, then 1..5 once more after a reconnect.
    again = batch(m, key, 1, frames[:3])
    assert relayed(again) == [] and sent(again)[0] == (protocol.ACK, 3, ())
    overlap = batch(m, key, 1, frames)
    assert relayed(overlap) == [4, 5] and sent(overlap)[0].value == 5
    assert m.status()["relayed"] == 5, "the metrics count each relayed event once"


def test_a_duplicate_after_a_master_restart_is_dropped(tmp_path):
    key = new_key()
    first = machine(tmp_path)
    hello(first, key, "web1")
    assert relayed(batch(first, key, 1, [event("myco/e", n=n) for n in (1, 2, 3)])) == [1, 2, 3]

    restarted = machine(tmp_path)
    # The minion's next message reaches a master that does not know its session: it must say hello.
    assert [msg.kind for msg in sent(batch(restarted, key, 1, [event("myco/e", n=1)]))] == [protocol.WHO]
    welcome = sent(hello(restarted, key, "web1"))[0]
    assert welcome.value["last"] == 3, "the welcome says where to resume, from the seq kept on disk"
    replay = batch(restarted, key, 1, [event("myco/e", n=n) for n in (1, 2, 3, 4)])
    assert relayed(replay) == [4] and sent(replay)[0].value == 4


def test_a_gap_the_minion_did_not_make_asks_for_a_resend_and_old_seqs_are_ignored(tmp_path):
    m = machine(tmp_path)
    key = new_key()
    hello(m, key, "web1")
    batch(m, key, 1, [event("myco/e", n=n) for n in (1, 2, 3, 4, 5)])
    ahead = batch(m, key, 9, [event("myco/e", n=9)])
    assert relayed(ahead) == [] and [(msg.kind, msg.value) for msg in sent(ahead)] == [(protocol.RESEND, 5)]
    old = batch(m, key, 2, [event("myco/e", n=2), event("myco/e", n=3)])
    assert relayed(old) == [] and sent(old)[0] == (protocol.ACK, 5, ())
    # A gap below the minion's floor is its own (its full spool dropped the oldest): accepted.
    dropped = batch(m, key, 20, [event("myco/e", n=20), event("myco/e", n=21)], floor=19)
    assert relayed(dropped) == [20, 21] and sent(dropped)[0].value == 21
    resumed = batch(m, key, 6, [event("myco/e", n=6)])
    assert relayed(resumed) == [] and sent(resumed)[0].value == 21


def test_refused_events_in_a_batch_are_logged_and_still_acknowledged(tmp_path):
    m = machine(tmp_path)
    key = new_key()
    hello(m, key, "web1")
    actions = batch(m, key, 1, [event("salt/key", n=1), event("salt/minion/other/start", n=2), event("myco/ok", n=3),
                                b"myco/bad\x00\x93\x01\x02\x03"])
    assert relayed(actions) == [3]
    assert [a.kind for a in actions if isinstance(a, ms.Refuse)] == ["tag", "tag", "relay"]
    assert sent(actions)[0].value == 4


def test_a_minion_that_changes_its_key_is_denied_and_the_first_key_keeps_relaying(tmp_path):
    m = machine(tmp_path)
    real, other = new_key(), new_key()
    hello(m, real, "web1")
    batch(m, real, 1, [event("myco/e", n=1)])
    actions = m.receive(b"route-2", other, protocol.hello("web1"), 1.0)
    assert published(actions) == [("salt/auth", {"result": False, "act": "denied", "id": "web1", "pub": other})]
    assert sent(actions, b"route-2")[0].value["result"] == "denied"
    assert [a.kind for a in actions if isinstance(a, ms.Refuse)] == ["claim"]
    refused = m.receive(b"route-2", other, protocol.events(2, 0, [event("myco/e", n=2)]), 1.0)
    assert relayed(refused) == [] and [a.kind for a in refused] == ["unaccepted"]
    assert relayed(batch(m, real, 2, [event("myco/e", n=2)])) == [2]
    assert m.store.listing()["minions_denied"] == ["web1"]


def test_reject_and_delete_stop_a_connected_minion_at_once(tmp_path):
    m = machine(tmp_path)
    key = new_key()
    hello(m, key, "web1")
    change, = m.store.change("reject", "web1")
    actions = m.key_changed(change, 1.0)
    assert published(actions) == [("salt/key", {"result": True, "id": "web1", "act": "reject"})]
    assert sent(actions)[0].value["result"] == "reject" and m.status()["present"] == []
    assert [a.kind for a in batch(m, key, 1, [event("myco/e", n=1)])] == ["unaccepted"]
    change, = m.store.change("delete", "web1")
    assert [msg.kind for msg in sent(m.key_changed(change, 2.0))] == [protocol.WHO]
    assert m.status()["sessions"] == 0
    assert [msg.kind for msg in sent(m.receive(ROUTE, key, protocol.PING_MESSAGE, 3.0))] == [protocol.WHO]


def test_presence_expires_within_two_heartbeats_and_a_late_heartbeat_keeps_it(tmp_path):
    m = machine(tmp_path)
    live, frozen = new_key(), new_key()
    hello(m, live, "live", 0.0, route=b"r-live")
    hello(m, frozen, "frozen", 0.0, route=b"r-frozen")
    assert m.presence_events()[0] == ms.Publish("salt/presence/present", {"present": ["frozen", "live"]})
    gone_at = None
    next_ping = 1.2
    for step in range(1, 21):
        now = step * HEARTBEAT / 4  # the adapter checks four times per heartbeat
        if now >= next_ping:  # live pings every 1.2 heartbeats: a little late each time
            m.receive(b"r-live", live, protocol.PING_MESSAGE, now)
            next_ping += 1.2
        notes = m.check_presence(now)
        if any("'frozen' stopped answering" in n.message for n in notes):
            gone_at = now
    assert gone_at is not None and gone_at <= 2 * HEARTBEAT, f"frozen left at {gone_at}, not within two heartbeats"
    assert m.status()["present"] == ["live"]
    assert m.presence_events() == [ms.Publish("salt/presence/present", {"present": ["live"]}),
                                   ms.Publish("salt/presence/change", {"new": [], "lost": ["frozen"]})]
    assert m.presence_events() == [ms.Publish("salt/presence/present", {"present": ["live"]})]


def test_a_fire_goes_to_present_matches_and_a_minion_that_never_acks_expires(tmp_path):
    jobs = FireJobs(ttl=120.0)
    m = machine(tmp_path, fire_jobs=jobs)
    keys_ = {name: new_key() for name in ("web1", "web2", "db1")}
    for name, key in keys_.items():
        hello(m, key, name, 0.0, route=name.encode())
    frame = event("myco/cmd", x=1)
    job, actions = m.fire("web*", frame, 1.0)
    assert job["targets"] == ["web1", "web2"]
    assert {a.route for a in actions} == {b"web1", b"web2"}
    assert protocol.parse(actions[0].frames) == (protocol.FIRE, job["job"], [frame])
    m.receive(b"web1", keys_["web1"], protocol.fired(job["job"]), 1.1)
    m.receive(b"db1", keys_["db1"], protocol.fired(job["job"]), 1.1)  # not a target: ignored
    assert jobs.status(job["job"]) == {"targets": ["web1", "web2"], "acked": ["web1"]}
    # web2 never answers: the job stays until its time is up, then it is gone.
    assert jobs.expire(100.0) == [] and jobs.status(job["job"])["acked"] == ["web1"]
    assert jobs.expire(121.5) == [job["job"]] and jobs.status(job["job"]) is None
    # A minion that is no longer present is not targeted.
    m.check_presence(10.0)
    assert m.fire("*", frame, 10.0)[0]["targets"] == []


@pytest.mark.parametrize("frames, problem", [
    ([b"nonsense", b"x"], "unknown message kind"),
    ([b"hello", msgpack.packb({"id": "../etc"})], "invalid minion id"),
    ([b"welcome", msgpack.packb({"result": "accept", "last": 0, "heartbeat": 1})], "not a minion's message"),
])
def test_garbage_and_master_messages_from_a_minion_are_refused(tmp_path, frames, problem):
    m = machine(tmp_path)
    key = new_key()
    hello(m, key, "web1")
    actions = m.receive(ROUTE, key, frames, 1.0)
    assert len(actions) == 1 and isinstance(actions[0], ms.Refuse) and problem in actions[0].message


def test_a_hello_without_a_curve_key_is_refused(tmp_path):
    m = machine(tmp_path)
    actions = hello(m, "", "web1")
    assert [a.kind for a in actions] == ["auth"] and m.status()["sessions"] == 0
