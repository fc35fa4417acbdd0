"""SSE records, resume planning, the fan-out hub and webhook bodies, without a server."""
from __future__ import annotations

import json
import threading
import time

import pytest

from eventbus.errors import ApiError
from eventbus.bus.inbox import Inbox
from eventbus.netapi import hooks
from eventbus.netapi.sse.hub import Hub
from eventbus.netapi.sse.stream import KEEPALIVE, RETRY, event_record, parse_last_event_id
from tests.helpers import wait_for


def test_event_record_is_salts_layout_plus_id():
    record = event_record(1042, "salt/job/1/new", {"id": "web01", "raw": b"\x00\x01", "n": 1})
    text = record.raw.decode()
    assert text.startswith("id: 1042\ntag: salt/job/1/new\ndata: ") and text.endswith("\n\n")
    body = json.loads(text.split("data: ", 1)[1])
    assert body == {"tag": "salt/job/1/new", "data": {"id": "web01", "raw": "AAE=", "n": 1}}
    assert record.event_id == "web01" and record.seq == 1042
    assert RETRY == b"retry: 400\n\n" and KEEPALIVE == b": keepalive\n\n"


def test_a_tag_cannot_forge_sse_fields():
    raw = event_record(1, "evil\nid: 999\ndata: x", {}).raw.decode()
    assert raw.count("\nid: ") == 0 and raw.startswith("id: 1\n") and raw.count("\n") == 4


def test_gap_record_has_no_id():
    inbox = Inbox()
    inbox.start_from(10, 41)
    inbox.accept_page({"seq": 50, "epoch": 1, "events": [], "lost": 30})  # 11..40 are gone everywhere
    notice = inbox.take_gap()
    raw = event_record(notice.seq, notice.tag, notice.data).raw.decode()
    assert raw == 'tag: eventbus/stream/gap\ndata: {"tag": "eventbus/stream/gap", "data": {"lost": 30}}\n\n'


def test_last_event_id_parsing():
    assert parse_last_event_id(None) is None and parse_last_event_id(" ") is None
    assert parse_last_event_id("1042") == 1042
    for bad in ("-1", "1e3", "abc", "1" * 30):
        with pytest.raises(ValueError, match="Last-Event-ID"):
            parse_last_event_id(bad)


def _records(first: int, count: int) -> list:
    return [event_record(seq, "t/x", {"n": seq}) for seq in range(first, first + count)]


def test_hub_streams_read_what_came_after_they_opened_and_share_views():
    hub = Hub(capacity=100)
    hub.publish(_records(1, 3), epoch=1)
    first, head, epoch = hub.open(("all",), None)
    second, _, _ = hub.open(("all",), None)
    only_odd, _, _ = hub.open(("odd",), lambda tag, _id: False)
    assert (head, epoch, hub.streams) == (3, 1, 3)
    assert second.view is first.view and only_odd.view is not first.view
    hub.publish(_records(4, 2), epoch=1)
    hub.flush_interval = 0
    hub.flush()
    data = hub.read(first, 0.1)
    assert data == b"".join(r.raw for r in _records(4, 2))
    assert hub.read(second, 0.1) is data  # rendered once for both streams
    assert hub.read(first, 0.05) == b""  # quiet: nothing after the timeout
    assert hub.take(only_odd) == b""
    for stream in (first, second, only_odd):
        hub.release(stream)
    assert hub.streams == 0


def test_hub_drops_a_stream_that_falls_behind_its_capacity():
    hub = Hub(capacity=10)
    slow, _, _ = hub.open(("all",), None)
    fast, _, _ = hub.open(("all",), None)
    hub.publish(_records(1, 8), epoch=1)
    assert hub.read(fast, 0) == b"".join(r.raw for r in _records(1, 8))
    hub.publish(_records(9, 8), epoch=1)
    assert hub.read(fast, 0) == b"".join(r.raw for r in _records(9, 8))
    assert hub.read(slow, 0) is None


def test_hub_wakes_a_sleeping_stream_and_closes():
    hub = Hub(capacity=10)
    stream, _, _ = hub.open(("all",), None)
    got = []
    reader = threading.Thread(target=lambda: got.append(hub.read(stream, 5)))
    reader.start()
    wait_for(lambda: hub._parked, what="the reader to sleep in read()")
    started = time.monotonic()
    hub.publish(_records(1, 1), epoch=1)
    reader.join(5)
    assert got == [_records(1, 1)[0].raw] and time.monotonic() - started < 2
    closer = threading.Thread(target=lambda: got.append(hub.read(stream, 5)))
    closer.start()
    wait_for(lambda: hub._parked, what="the reader to sleep in read()")
    hub.close()
    closer.join(5)
    assert got[-1] is None


def test_hook_bodies_by_content_type():
    assert hooks.parse_body(b'{"a": 1}', "application/json; charset=utf-8") == {"a": 1}
    assert hooks.parse_body(b"a=1&b=2&a=3", "application/x-www-form-urlencoded") == {"a": ["1", "3"], "b": "2"}
    assert hooks.parse_body(b"a: [1, 2]", "application/x-yaml") == {"a": [1, 2]}
    assert hooks.parse_body(b"", None) == {}
    for raw, content_type, status in [(b"{x", "application/json", 400), (b"\xff", "application/json", 400),
                                      (b"a: &x 1\nb: *x", "text/yaml", 400), (b"hi", "text/plain", 415)]:
        with pytest.raises(ApiError) as caught:
            hooks.parse_body(raw, content_type)
        assert caught.value.status == status


def test_hook_tag_and_credential_headers():
    assert hooks.hook_tag(("github", "push")) == "salt/netapi/hook/github/push"
    assert hooks.hook_tag(()) == "salt/netapi/hook"
    kept = hooks.public_headers({"Authorization": "Bearer x", "X-Auth-Token": "t", "Cookie": "c",
                                 "X-Github-Event": "push", "Content-Type": "application/json"})
    assert kept == {"X-Github-Event": "push", "Content-Type": "application/json"}


def test_a_hub_stream_skips_what_the_resume_sent_then_everything_after_the_seam():
    hub = Hub(capacity=100)
    hub.publish(_records(1, 2), epoch=1)
    stream, _head, _epoch = hub.open(("all",), None, skip_upto=4)
    hub.publish(_records(3, 4), epoch=1)  # 3..6; the resume already sent up to 4
    data = hub.take(stream)
    assert [line for line in data.split(b"\n") if line.startswith(b"id: ")] == [b"id: 5", b"id: 6"]
    assert stream.skip_upto == 0, "past the seam nothing is skipped any more"
    assert hub.take(stream) == b""
    hub.publish(_records(7, 101), epoch=1)
    assert hub.take(stream) is None, "a stream the ring left behind is dropped"


def test_stream_state_says_when_a_keepalive_is_due_and_when_the_token_expired():
    from eventbus.netapi.sse.streamstate import StreamState
    from eventbus.netapi.sse.stream import KEEPALIVE_AFTER

    hub = Hub(capacity=10)
    stream, _head, _epoch = hub.open(("all",), None)
    state = StreamState(stream, expire=1000.0, user="u", peer="p")
    state.wrote(50.0)
    assert not state.keepalive_due(50.0 + KEEPALIVE_AFTER - 0.1)
    assert state.keepalive_due(50.0 + KEEPALIVE_AFTER)
    assert state.quiet_left(50.0 + 5) == KEEPALIVE_AFTER - 5
    assert not state.expired(999.0) and state.expired(1000.0)
