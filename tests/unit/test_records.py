"""Forwarded records: the salt JSON record and CloudEvents 1.0 (structured and binary), as SPEC 8 words them."""
from __future__ import annotations

import json

import pytest

from eventbus.forwarding import formats

STAMP = "2026-11-21T09:19:17.751376"
RELAYED = {"cmd": "_minion_event", "id": "web1", "tag": "myco/hello", "data": {"who": "me"}, "_stamp": STAMP}


def test_a_salt_record_is_seq_tag_data_as_json():
    out = formats.outgoing(42, "myco/event", {"n": 1, "_stamp": STAMP})
    assert json.loads(out.body) == {"seq": 42, "tag": "myco/event", "data": {"n": 1, "_stamp": STAMP}}
    assert out.time == "2026-11-21T09:19:17.751376Z"
    assert out.minion_id is None


def test_a_cloudevent_carries_the_spec_attributes():
    event = json.loads(formats.outgoing(42, "myco/event", {"n": 1, "_stamp": STAMP}, "cloudevents").body)
    assert event == {"specversion": "1.0", "id": "42", "source": "/eventbus/master", "type": "myco/event",
                     "time": "2026-11-21T09:19:17.751376Z", "datacontenttype": "application/json",
                     "data": {"n": 1, "_stamp": STAMP}}


def test_a_relayed_event_names_its_minion_and_keeps_the_data_as_the_bus_carries_it():
    out = formats.outgoing(7, "myco/hello", RELAYED, "cloudevents")
    event = json.loads(out.body)
    assert out.minion_id == "web1"
    assert event["source"] == "/eventbus/minion/web1"
    assert event["data"] == RELAYED
    assert json.loads(formats.outgoing(7, "myco/hello", RELAYED).body)["data"] == RELAYED


def test_binary_mode_puts_attributes_in_headers_and_the_data_in_the_body():
    headers, body = formats.binary_http(9, "a/b", {"x": 1, "_stamp": STAMP})
    assert headers["ce-id"] == "9" and headers["ce-type"] == "a/b" and headers["ce-specversion"] == "1.0"
    assert headers["ce-source"] == "/eventbus/master" and headers["ce-time"] == "2026-11-21T09:19:17.751376Z"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"x": 1, "_stamp": STAMP}


def test_bytes_and_a_bad_stamp_do_not_break_a_record():
    out = formats.outgoing(1, "a", {"raw": b"\x00\x01", "_stamp": "yesterday"}, "cloudevents")
    event = json.loads(out.body)
    assert event["data"]["raw"] == str(b"\x00\x01")
    assert event["time"].endswith("Z")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown record format 'xml'"):
        formats.outgoing(1, "a", {}, "xml")


def test_any_msgpack_value_makes_a_json_record_huge_integers_int_keys_and_non_ascii_included():
    data = {"big": 2 ** 70, 7: "seven", "name": "Zoë", "raw": b"\x01", "f": 0.1}
    body = formats.outgoing(3, "a/é", data).body
    assert body.isascii() is False, "UTF-8, not \\u escapes"
    assert json.loads(body) == {"seq": 3, "tag": "a/é",
                                "data": {"big": 2 ** 70, "7": "seven", "name": "Zoë", "raw": str(b"\x01"), "f": 0.1}}
    assert json.loads(formats.json_text(data))["big"] == 2 ** 70
