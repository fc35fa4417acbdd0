"""The link protocol's messages, the relayed event's shape and the tags minions may not fire."""
from __future__ import annotations

import msgpack
import pytest

from eventbus.daemon.link import protocol
from eventbus.errors import EventTooLargeError, InvalidEventError, ProtocolError
from eventbus.bus.relay import refused_tag


def test_messages_round_trip():
    assert protocol.parse(protocol.hello("web1")) == (protocol.HELLO, {"id": "web1"}, ())
    welcome = protocol.parse(protocol.welcome("accept", 42, 0.5))
    assert welcome.value == {"result": "accept", "last": 42, "heartbeat": 0.5, "packed": True}
    batch = protocol.parse(protocol.events(7, 3, [b"a\x00\x80", b"b\x00\x80"]))
    assert batch.value == (7, 3) and batch.frames == [b"a\x00\x80", b"b\x00\x80"]
    assert protocol.parse(protocol.ack(2 ** 63)).value == 2 ** 63
    assert protocol.parse(protocol.fire(9, b"t\x00\x80")) == (protocol.FIRE, 9, [b"t\x00\x80"])
    assert protocol.parse(protocol.PING_MESSAGE).kind == protocol.PING


@pytest.mark.parametrize("frames, problem", [
    ([], "empty"),
    ([b"nonsense", b"x"], "unknown message kind"),
    ([b"hello", b"\xc1garbage"], "not msgpack"),
    ([b"hello", msgpack.packb([1, 2])], "not a map"),
    ([b"hello", msgpack.packb({"id": "../etc"})], "invalid minion id"),
    ([b"hello", msgpack.packb({"id": "a b"})], "invalid minion id"),
    ([b"events", b"short"], "batch header"),
    ([b"ack", b"123"], "sequence number"),
    ([b"welcome", msgpack.packb({"result": "maybe"})], "unknown result"),
])
def test_garbage_is_a_protocol_error_naming_the_problem(frames, problem):
    with pytest.raises(ProtocolError, match=problem):
        protocol.parse(frames)


def test_relayed_event_has_the_spec_shape_with_id_from_the_session():
    framer = protocol.RelayFramer("web1")
    user = {"id": "forged", "x": [1, 2]}
    tag, frame = framer.frame(b"myco/a\x00" + msgpack.packb(user), 4096)
    raw_tag, _, raw_data = frame.partition(b"\x00")
    data = msgpack.unpackb(raw_data)
    assert tag == "myco/a" and raw_tag == b"myco/a"
    assert set(data) == {"id", "tag", "data", "cmd", "_stamp"}
    assert data["id"] == "web1" and data["tag"] == "myco/a" and data["data"] == user
    assert data["cmd"] == "_minion_event" and len(data["_stamp"]) == 26


def test_relayed_event_is_checked():
    framer = protocol.RelayFramer("web1")
    with pytest.raises(InvalidEventError, match="reserved"):
        framer.frame(b"salt/auth\x00" + msgpack.packb({}), 4096)
    with pytest.raises(InvalidEventError, match="not a msgpack map"):
        framer.frame(b"myco/a\x00\x93\x01\x02\x03", 4096)
    with pytest.raises(EventTooLargeError):
        framer.frame(b"myco/a\x00" + msgpack.packb({"x": "y" * 300}), 300)


@pytest.mark.parametrize("tag, refused", [
    ("salt/auth", True), ("salt/key", True), ("salt/key/x", True), ("salt/presence/present", True),
    ("salt/presence/change", True), ("salt/netapi/hook/x", True), ("salt/minion/other/start", True),
    ("salt/minion/web10/start", True), ("salt/minion/web1/start", False), ("salt/job/1/ret/web1", False),
    ("myco/salt/auth", False),
])
def test_reserved_tags(tag, refused):
    assert (refused_tag(tag, "web1") is not None) is refused


def test_a_batch_in_one_frame_reads_as_the_events_message_it_packs():
    frames = [b"a/b\x00\x80", b"c\x00\x81\xa1x\x01"]
    message = protocol.parse(protocol.packed_events(7, 5, frames))
    assert message == protocol.parse(protocol.events(7, 5, frames))
    assert message.kind == protocol.EVENTS and message.value == (7, 5) and list(message.frames) == frames
    assert len(protocol.packed_events(7, 5, frames)) == 3, "one frame for the events, however many"
    assert msgpack.unpackb(protocol.welcome("accept", 1, 5.0)[1])["packed"] is True, "the master offers it"


@pytest.mark.parametrize("frames, problem", [
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(1, 0)], "one packed frame"),
    ([protocol.BATCH, b"\x00" * 3, msgpack.packb([b"x"])], "batch header"),
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(1, 0), b"\xc1"], "not a msgpack array"),
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(1, 0), msgpack.packb({"a": 1})], "not a msgpack array"),
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(1, 0), msgpack.packb([b"x", 5])], "array of byte strings"),
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(1, 0), msgpack.packb(["text"])], "not a msgpack array"),
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(1, 0), msgpack.packb([b"x"] * (protocol.PACKED_MAX_EVENTS + 1))],
     f"at most {protocol.PACKED_MAX_EVENTS}"),
    ([protocol.BATCH, protocol.BATCH_HEADER.pack(protocol.MAX_SEQ, 0), msgpack.packb([b"x", b"y"])],
     "past the last sequence number"),
])
def test_a_bad_batch_is_a_protocol_error_naming_the_problem(frames, problem):
    with pytest.raises(ProtocolError, match=problem):
        protocol.parse(frames)


def test_a_packed_batch_over_a_minions_size_is_still_refused_as_oversize():
    message = protocol.parse(protocol.packed_events(1, 0, [b"t\x00\x80"] * (protocol.MAX_BATCH_EVENTS + 1)))
    assert protocol.oversize(message.frames)
