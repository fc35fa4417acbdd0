"""The closed error tree: every refusal of the library is an EventBusError with fields, ValueError where SPEC says."""
from __future__ import annotations

import msgpack
import pytest

from eventbus.daemon.link import protocol
from eventbus import event, minionid
from eventbus.bus import wire
from eventbus.errors import (EventBusError, InvalidArgumentError, InvalidMatchError, InvalidMinionIdError,
                             MalformedFrameError, ProtocolError)
from eventbus.bus.match import matcher


def test_bad_match_types_and_regexes_carry_pattern_and_type():
    with pytest.raises(InvalidMatchError) as unknown:
        matcher("x", "prefix")
    assert unknown.value.match_type == "prefix" and unknown.value.argument == "match_type"
    with pytest.raises(InvalidMatchError) as bad_regex:
        matcher("salt/(", "regex")
    assert bad_regex.value.pattern == "salt/(" and "not a valid regular expression" in str(bad_regex.value)
    for caught in (unknown.value, bad_regex.value):
        assert isinstance(caught, EventBusError) and isinstance(caught, ValueError)


def test_get_event_refuses_an_unknown_node_or_transport_with_a_value_error_naming_it():
    with pytest.raises(InvalidArgumentError) as node:
        event.get_event("syndic")
    assert node.value.argument == "node" and node.value.value == "syndic" and isinstance(node.value, ValueError)
    with pytest.raises(InvalidArgumentError) as transport:
        event.get_event("master", transport="tcp")
    assert transport.value.argument == "transport"


@pytest.mark.parametrize("frame", [b"", b"short", b"\x00" * 16 + b"no separator"])
def test_a_malformed_bus_frame_is_a_protocol_error_and_a_value_error(frame):
    with pytest.raises(MalformedFrameError) as caught:
        wire.split_bus_frame(frame)
    assert caught.value.what == "bus frame" and isinstance(caught.value, ProtocolError)
    assert isinstance(caught.value, ValueError)  # what callers that skip bad frames catch


def test_a_malformed_control_reply_is_a_protocol_error():
    with pytest.raises(MalformedFrameError, match="control reply"):
        wire.parse_reply([b"maybe", msgpack.packb(None)])
    assert wire.parse_reply(wire.reply({"a": 1})) == (True, {"a": 1})


@pytest.mark.parametrize("minion_id, reason", [
    (".", "not file names"), ("..", "not file names"), ("", "empty"), ("a" * 251, "over the limit"),
    ("é" * 126, "over the limit"), ("web\x01", "control character"), ("web\x7f", "control character"),
    ("a\nb", "control character"), ("a/b", "'/'"), ("a\\b", "'\\\\'"), ("web*", "'*'"), ("a b", "' '"),
    (7, "not a string"),
])
def test_one_rule_for_minion_ids_shared_by_config_and_link(minion_id, reason):
    assert not minionid.valid(minion_id)
    with pytest.raises(InvalidMinionIdError) as caught:
        minionid.check(minion_id)
    assert reason in caught.value.reason and caught.value.minion_id == minion_id
    with pytest.raises(ProtocolError, match="invalid minion id"):
        protocol.parse(protocol.hello(minion_id))


@pytest.mark.parametrize("minion_id", ["web01", "a" * 250, "é" * 125, "db.example.com", "x_y-z@1"])
def test_ids_the_config_accepts_the_link_accepts(minion_id):
    assert minionid.check(minion_id) == minion_id
    assert protocol.parse(protocol.hello(minion_id)).value == {"id": minion_id}
