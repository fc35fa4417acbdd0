"""The server side of a control socket without sockets: routing frames kept, verbs dispatched, refusals worded once."""
from __future__ import annotations

import logging

import msgpack

from eventbus import controlserver
from eventbus.bus import wire
from eventbus.refusallog import Complaints

ENDPOINT = "ipc:///s/ctl.ipc"


def echo(args):
    if args == "no":
        raise ValueError("not that")
    return {"echo": args}


def answer(frames: list[bytes]) -> list[bytes] | None:
    verbs = {wire.VERB_PING: echo, b"stats": lambda _args: {"n": 1}}
    return controlserver.answer(verbs, frames, Complaints(logging.getLogger("test.controlserver")), ENDPOINT)


def test_a_dealer_and_a_req_request_get_their_answer_behind_their_routing_frames():
    replied = answer([b"peer", *wire.request(wire.VERB_PING, [1])])
    assert replied[:1] == [b"peer"] and wire.parse_reply(replied[1:]) == (True, {"echo": [1]})
    replied = answer([b"peer", b"", *wire.request(wire.VERB_PING)])
    assert replied[:2] == [b"peer", b""] and wire.parse_reply(replied[2:]) == (True, {"echo": None})


def test_verbs_answer_and_refusals_name_the_verb(caplog):
    assert wire.parse_reply(answer([b"p", *wire.request(b"stats")])[1:]) == (True, {"n": 1})
    assert wire.parse_reply(answer([b"p", *wire.request(wire.VERB_PING, "no")])[1:]) == (False, "ping: not that")
    assert wire.parse_reply(answer([b"p", wire.VERB_PING, b"\xc1 not msgpack"])[1:])[0] is False
    with caplog.at_level(logging.ERROR):
        refused = answer([b"p", b"nope", msgpack.packb(None)])
    assert wire.parse_reply(refused[1:]) == (False, "unknown verb b'nope'")
    assert f"refused unknown control verb b'nope' on {ENDPOINT}" in caplog.text


def test_a_malformed_request_gets_no_answer_and_one_log_line(caplog):
    with caplog.at_level(logging.ERROR):
        assert answer([b"peer", b"one frame only"]) is None
        assert answer([b"peer"]) is None
    assert caplog.text.count(f"refused a malformed control request on {ENDPOINT}") == 2
