"""The sans-IO parts of a master carrying thousands of minions: its open-file limit, presence in parts, accept-all."""
from __future__ import annotations

import resource

import msgpack
import zmq

from eventbus import keys
from eventbus.daemon import openfiles
from eventbus.daemon.link import master_session as ms
from eventbus.daemon.link.presence import chunks
from eventbus.daemon.link.relaystream import RelaySeqs

UNLIMITED = resource.RLIM_INFINITY


def test_the_soft_open_file_limit_goes_up_to_the_hard_one_without_a_word_when_that_is_enough():
    assert openfiles.plan(1024, 65536, 10_000) == (65536, None)
    assert openfiles.plan(65536, 65536, 10_000) == (65536, None)


def test_a_hard_open_file_limit_below_the_fleets_need_is_named_with_what_to_set():
    soft, warning = openfiles.plan(1024, 4096, 10_000)
    assert soft == 4096
    assert warning is not None
    assert "hard 4096" in warning and "11024" in warning and "10000 minion keys" in warning
    assert "LimitNOFILE=16384" in warning and "ulimit -n 16384" in warning


def test_an_unlimited_hard_open_file_limit_takes_the_soft_one_up_to_the_need():
    assert openfiles.plan(1024, UNLIMITED, 10_000) == (openfiles.needed(10_000), None)
    assert openfiles.plan(UNLIMITED, UNLIMITED, 10_000) == (UNLIMITED, None)


def test_presence_ids_are_cut_in_order_into_parts_that_each_fit_an_event():
    ids = [f"minion-{n:06d}.example.com" for n in range(20_000)]
    parts = chunks(ids, 65536)
    assert len(parts) > 1
    assert [i for part in parts for i in part] == ids
    for part in parts:
        event = msgpack.packb({"present": part, "part": 99, "parts": 99, "_stamp": "2026-01-01T00:00:00.000000"})
        assert len(event) + len("salt/presence/present") < 65536
    assert chunks(ids, 16 * 1024 * 1024) == [ids]


def test_a_fleets_presence_events_stay_under_max_event_size(tmp_path):
    store = keys.KeyStore(tmp_path / "pki")
    machine = ms.MasterSessions(store, RelaySeqs(tmp_path / "relay"), heartbeat=5.0, auto_accept=True,
                                max_event_size=4096)
    for n in range(600):
        machine.presence.heard(f"fleet-{n:05d}", 0.0)
    actions = machine.presence_events()
    present = [a for a in actions if a.tag == "salt/presence/present"]
    change = [a for a in actions if a.tag == "salt/presence/change"]
    assert len(present) > 1 and len(change) > 1
    assert sorted(i for a in present for i in a.data["present"]) == sorted(machine.presence.last_heard)
    assert sorted(i for a in change for i in a.data["new"]) == sorted(machine.presence.last_heard)
    assert [a.data["part"] for a in present] == list(range(1, len(present) + 1))
    for action in actions:
        assert len(msgpack.packb(action.data)) + len(action.tag) < 4096 - 64
    # Quiet next time: one present event when the set fits again, no change event.
    for n in range(590):
        machine.presence.forget(f"fleet-{n:05d}")
    later = machine.presence_events()
    assert [a.data for a in later if a.tag == "salt/presence/present"] == [
        {"present": sorted(machine.presence.last_heard)}]


def test_accept_all_accepts_every_pending_key_with_its_own_key_and_leaves_the_others(tmp_path):
    store = keys.KeyStore(tmp_path / "pki")
    pending = {f"m{n:04d}": zmq.curve_keypair()[0].decode() for n in range(500)}
    for minion_id, key in pending.items():
        assert store.decide(minion_id, key, auto_accept=False).act == "pend"
    rejected_key = zmq.curve_keypair()[0].decode()
    store.decide("bad", rejected_key, auto_accept=False)
    next(store.change("reject", "bad"))
    changes = list(store.change("accept_all"))
    assert {(c.minion_id, c.key) for c in changes} == set(pending.items())
    assert {c.act for c in changes} == {"accept"}
    listing = store.listing()
    assert listing[keys.ACCEPTED] == sorted(pending) and listing[keys.PENDING] == []
    assert listing[keys.REJECTED] == ["bad"]
    assert store.decide("m0001", pending["m0001"], auto_accept=False).act == "accept"
    assert list(store.change("accept_all")) == []
