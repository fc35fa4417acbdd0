"""The master/minion link's trust with real daemons on loopback: keys, rogue clients, the wire, reserved tags."""
from __future__ import annotations

import msgpack
import pytest
import zmq

from eventbus.daemon.link import protocol
from eventbus import event
from tests.helpers import run_cli, wait_for
from tests.linkkit import RawMinion, RecordingProxy, link_state, master_link, relay, wait_link


def cli(node, *args: str):
    return run_cli(*args, "-c", str(node.config_dir))


def test_pending_key_is_accepted_and_spooled_events_follow(site):
    master = site.master()
    master.start()
    minion = site.minion("m1")
    with event.get_event("master", opts=master.opts()) as bus:
        minion.start()
        auth = bus.get_event(wait=10, tag="salt/auth")
        assert auth["act"] == "pend" and auth["result"] is False and auth["id"] == "m1"
        wait_link(minion, "pend")
        listing = cli(master, "key", "--list")
        assert listing.returncode == 0
        assert listing.stdout.splitlines() == ["Accepted Keys:", "Denied Keys:", "Unaccepted Keys:", "m1", "Rejected Keys:"]
        relay(minion, ("myco/early", {"n": 1}))
        assert bus.get_event(wait=1, tag="myco/") is None, "a pending minion relayed an event"

        accepted = cli(master, "key", "--accept", "m1")
        assert accepted.returncode == 0, accepted.stderr
        assert "m1" in accepted.stdout
        key_event = bus.get_event(wait=5, tag="salt/key")
        assert key_event["act"] == "accept" and key_event["id"] == "m1" and key_event["result"] is True
        start = bus.get_event(wait=5, tag="salt/minion/m1/start")
        assert start["id"] == "m1" and start["cmd"] == "_minion_event" and "Minion m1 started" in start["data"]
        early = bus.get_event(wait=5, tag="myco/", full=True)
        assert early["data"]["data"] == {"n": 1} and early["data"]["id"] == "m1"
        assert early["data"]["cmd"] == "_minion_event" and early["data"]["tag"] == "myco/early"
        assert bus.get_event(wait=0.5, tag="myco/") is None, "the spooled event came twice"
    assert cli(master, "key", "--list").stdout.splitlines()[:2] == ["Accepted Keys:", "m1"]


def test_rejected_and_impostor_keys_relay_nothing(site):
    master = site.master(auto_accept=True)
    master.start()
    minion = site.minion("m1")
    with event.get_event("master", opts=master.opts()) as bus:
        minion.start()
        wait_link(minion, "accept")
        # A second minion with its own key claims the accepted id m1.
        impostor = site.minion("m1")
        impostor.start()
        denied = wait_for(lambda: (e := bus.get_event(wait=1, tag="salt/auth")) and e["act"] == "denied" and e,
                          what="salt/auth denied")
        assert denied["result"] is False and denied["id"] == "m1"
        wait_link(impostor, "denied")
        listing = cli(master, "key", "--list").stdout.splitlines()
        assert listing == ["Accepted Keys:", "m1", "Denied Keys:", "m1", "Unaccepted Keys:", "Rejected Keys:"]
        relay(impostor, ("myco/impostor", {"evil": True}))

        assert cli(master, "key", "--reject", "m1").returncode == 0
        assert bus.get_event(wait=5, tag="salt/key")["act"] == "reject"
        wait_link(minion, "reject")
        relay(minion, ("myco/rejected", {"n": 1}))
        assert bus.get_event(wait=1.5, tag="myco/") is None, "a rejected or impostor key relayed an event"
        assert master_link(master)["present"] == []


def test_rogue_clients_inject_nothing_and_do_not_disturb(site):
    import socket

    master = site.master()
    master.start()
    with event.get_event("master", opts=master.opts()) as bus:
        forged = msgpack.packb({"tag": "myco/forged", "data": {"x": 1}})
        for port in (site.ret_port, site.publish_port):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"\xff" * 64 + b"GET / HTTP/1.0\r\n\r\n" + forged)
                raw.settimeout(1)
                try:
                    raw.recv(100)
                except OSError:
                    pass
        context = zmq.Context()
        try:
            plain = context.socket(zmq.DEALER)
            plain.setsockopt(zmq.LINGER, 0)
            plain.connect(f"tcp://127.0.0.1:{site.ret_port}")
            plain.send_multipart(protocol.events(1, 0, [b"myco/forged\x00" + msgpack.packb({"x": 1})]))
            plain.send_multipart(protocol.hello("plain"))
            assert plain.poll(1000) == 0, "a client without CURVE got an answer on the link"
        finally:
            context.destroy(0)
        # A CURVE client whose key nobody accepted: pending, its events are dropped.
        rogue = RawMinion(master, "rogue")
        try:
            assert rogue.hello().value["result"] == "pend"
            rogue.send(protocol.events(1, 0, [b"myco/forged\x00" + msgpack.packb({"x": 1})]))
            # The master handles a connection's messages in order: once it answers the ping after
            # the events, it has dealt with them.
            rogue.send(protocol.PING_MESSAGE)
            rogue.expect(protocol.PONG)
        finally:
            rogue.close()
        assert bus.fire_event({"marker": True}, "myco/marker")
        first = bus.get_event(wait=5, tag="myco/", full=True)
        assert first["tag"] == "myco/marker", "a rogue client injected an event"
        # The master still works: a real minion links and relays.
        minion = site.minion("m1")
        minion.start()
        wait_link(minion, "pend")
        assert cli(master, "key", "--accept", "m1").returncode == 0
        wait_link(minion, "accept")
        relay(minion, ("myco/real", {"ok": 1}))
        assert bus.get_event(wait=5, tag="myco/")["id"] == "m1"
    assert master.daemon.alive()


def test_the_wire_does_not_carry_the_event_text(site):
    master = site.master(auto_accept=True)
    master.start()
    ret_proxy = RecordingProxy(site.ret_port)
    publish_proxy = RecordingProxy(site.publish_port)
    try:
        minion = site.minion("m1", ret_port=ret_proxy.port, publish_port=publish_proxy.port)
        with event.get_event("master", opts=master.opts()) as bus:
            minion.start()
            wait_link(minion, "accept")
            secret_text = "the-quick-brown-fox-secret-1234567890"
            relay(minion, ("myco/secret", {"payload": secret_text}))
            got = bus.get_event(wait=5, tag="myco/secret")
            assert got["data"]["payload"] == secret_text
            fired = cli(master, "fire", '{"reply": "answer-text-0987654321"}', "myco/down", "--node", "master",
                        "--target", "m1")
            assert fired.returncode == 0 and fired.stdout.strip() == "m1: True", fired.stderr
        wire = bytes(ret_proxy.recorded)
        assert len(wire) > 200, "the link did not go through the proxy"
        assert secret_text.encode() not in wire and b"myco/secret" not in wire
        assert b"answer-text-0987654321" not in wire and b"myco/down" not in wire
        offer = bytes(publish_proxy.recorded)
        assert secret_text.encode() not in offer and b"answer-text" not in offer
    finally:
        ret_proxy.close()
        publish_proxy.close()

def test_reserved_tags_are_refused_on_both_sides(site):
    master, minion = site.linked()
    with event.get_event("master", opts=master.opts()) as bus:
        for tag in ("salt/auth", "salt/key", "salt/presence/present", "salt/minion/other/start",
                    "salt/netapi/hook/x"):
            result = cli(minion, "send", tag, '{"forged": true}')
            assert result.returncode == 1
            assert "reserved" in result.stderr or "another minion" in result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
            with event.MinionEvent(opts=minion.opts(), listen=False) as handle:
                with pytest.raises(ValueError):
                    handle.fire_master({"forged": True}, tag)
        # An accepted minion speaking the protocol directly is checked by the master too.
        raw = RawMinion(master, "raw1")
        try:
            assert raw.hello().value["result"] == "accept"
            raw.send(protocol.events(1, 0, [b"salt/key\x00" + msgpack.packb({"forged": True}),
                                             b"salt/minion/m1/start\x00" + msgpack.packb({"forged": True}),
                                             b"myco/ok\x00" + msgpack.packb({"id": "m1", "x": 1})]))
            assert raw.expect(protocol.ACK).value == 3
        finally:
            raw.close()
        own = cli(minion, "send", "salt/minion/m1/custom", "x=1")
        assert own.returncode == 0, own.stderr
        ok = bus.get_event(wait=5, tag="myco/ok")
        assert ok["id"] == "raw1" and ok["data"] == {"id": "m1", "x": 1}, "id must come from the key"
        assert bus.get_event(wait=5, tag="salt/minion/m1/custom")["id"] == "m1"
        assert bus.get_event(wait=0.5, tag="salt/key") is None
        assert bus.get_event(wait=0.2, tag="salt/minion/m1/start") is None
    assert "refused an event from minion 'raw1'" in master.daemon.log


def test_minion_refuses_a_master_whose_key_changed(site):
    master, minion = site.linked()
    master.stop()
    for name in ("master.key", "master.key_secret"):
        (master.settings.pki_dir / name).unlink()
    master.start()
    wait_for(lambda: "refusing the master" in minion.daemon.log, timeout=15, what="the refusal log line")
    assert link_state(minion)["state"] != "accept"
    with event.get_event("master", opts=master.opts()) as bus:
        relay(minion, ("myco/after", {"n": 1}))
        assert bus.get_event(wait=1, tag="myco/") is None
        # A minion told the master's key in its config links without pinning anything.
        new_key = (master.settings.pki_dir / "master.key").read_text().split('public-key = "')[1][:40]
        configured = site.minion("m2", master_pubkey=new_key)
        configured.start()
        wait_link(configured, "accept")
        assert not (configured.settings.pki_dir / "minion_master.pub").exists()
        relay(configured, ("myco/configured", {"n": 2}))
        assert bus.get_event(wait=5, tag="myco/")["id"] == "m2"
