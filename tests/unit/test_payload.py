"""The event format: stamping, packing, size limits, and checking untrusted frames."""
from __future__ import annotations

import datetime
import re

import msgpack
import pytest

from eventbus.bus import payload, wire
from eventbus.errors import EventTooLargeError, InvalidEventError

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


def test_stamp_is_utc_iso_with_microseconds_and_no_offset():
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    value = payload.stamp()
    after = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert STAMP.match(value), value
    assert before <= datetime.datetime.fromisoformat(value) <= after


def test_stamp_keeps_microseconds_when_they_are_zero():
    assert payload.stamp(lambda: 1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000"
    assert payload.stamp(lambda: 1_700_000_000_000_042_000) == "2023-11-14T22:13:20.000042"


def test_pack_event_stamps_a_copy_and_round_trips():
    data = {"message": "It works!", "n": [1, 2]}
    raw_tag, raw_data = payload.pack_event("myco/event/success", data, 1024)
    assert raw_tag == b"myco/event/success"
    assert "_stamp" not in data, "the caller's dict must not be changed"
    back = payload.unpack_data(raw_data)
    assert back["message"] == "It works!" and back["n"] == [1, 2]
    assert STAMP.match(back["_stamp"])


@pytest.mark.parametrize("data", [None, [], "text", 3, ("a", 1)])
def test_data_must_be_a_dict(data):
    with pytest.raises(ValueError, match="data must be a dict"):
        payload.pack_event("a/tag", data, 1024)


@pytest.mark.parametrize("tag", ["", None, 5, b"bytes/tag"])
def test_tag_must_be_a_non_empty_str(tag):
    with pytest.raises(ValueError, match="tag must be a non-empty str"):
        payload.pack_event(tag, {}, 1024)


def test_tag_with_nul_is_refused():
    with pytest.raises(InvalidEventError, match="NUL"):
        payload.check_tag("a\x00b")


def test_oversize_event_names_both_sizes_and_is_a_value_error():
    with pytest.raises(ValueError) as info:
        payload.pack_event("big/one", {"blob": "x" * 5000}, 4096)
    error = info.value
    assert isinstance(error, EventTooLargeError)
    assert error.limit == 4096 and error.size > 4096
    assert str(error.size) in str(error) and "4096" in str(error)


def test_event_exactly_at_the_limit_is_accepted():
    raw_tag, raw_data = payload.pack_event("t", {"blob": "x" * 100}, 10_000)
    size = len(raw_tag) + len(raw_data)
    # Same event, limit set to its exact size: accepted (the stamp has a fixed length).
    payload.pack_event("t", {"blob": "x" * 100}, size)
    with pytest.raises(EventTooLargeError):
        payload.pack_event("t", {"blob": "x" * 100}, size - 1)


def test_unpackable_values_are_refused_by_type_name():
    with pytest.raises(InvalidEventError, match="object"):
        payload.pack_event("t", {"thing": object()}, 1024)


def test_datetimes_and_sets_are_packed_as_text_and_lists():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    _, raw = payload.pack_event("t", {"when": when, "ids": {"b", "a"}}, 1024)
    back = payload.unpack_data(raw)
    assert back["when"] == "2026-01-02T03:04:05"
    assert sorted(back["ids"]) == ["a", "b"]


def good_frame(tag: str = "a/b", data: dict | None = None) -> bytes:
    return wire.publish_frame(*payload.pack_event(tag, data or {"k": "v"}, 1 << 20))


def test_check_published_accepts_a_real_event():
    frame = good_frame("salt/job/1/new")
    assert payload.check_published(frame, 1 << 20) == len("salt/job/1/new")


@pytest.mark.parametrize("frame, reason", [
    (b"", "not an event"),
    (b"no-separator-at-all", "not an event"),
    (b"\x00" + msgpack.packb({"a": 1}), "not an event"),
    (b"tag\x00", "not a msgpack map"),
    (b"tag\x00" + msgpack.packb([1, 2, 3]), "not a msgpack map"),
    (b"tag\x00" + msgpack.packb("a string"), "not a msgpack map"),
    (b"tag\x00\x85\xa1a", "not valid msgpack"),            # map of 5 with 1 truncated key
    (b"tag\x00" + msgpack.packb({"a": 1}) + b"junk", "not valid msgpack"),
    (b"\xff\xfe\x00" + msgpack.packb({"a": 1}), "not UTF-8"),
])
def test_check_published_refuses_garbage_with_a_reason(frame, reason):
    with pytest.raises(InvalidEventError, match=reason):
        payload.check_published(frame, 1 << 20)


def test_check_published_refuses_oversize_before_unpacking():
    frame = good_frame("t", {"blob": "x" * 3000})
    with pytest.raises(EventTooLargeError):
        payload.check_published(frame, 1000)


def test_split_bus_frame_round_trip():
    frame = wire.HEADER.pack(42, 7) + good_frame("x/y")
    seq, epoch, tag, data = wire.split_bus_frame(frame)
    assert (seq, epoch, tag) == (42, 7, b"x/y")
    assert payload.unpack_data(data)["k"] == "v"


def test_a_publisher_frame_is_built_and_split_by_wire_whole_or_in_parts():
    raw_data = msgpack.packb({"k": "v"})
    whole = wire.publish_frame(b"a/b", raw_data)
    assert whole == wire.publish_frame(b"a/b", raw_data[:1], raw_data[1:]) == b"a/b\x00" + raw_data
    assert wire.split_publish_frame(whole) == (b"a/b", b"\x00", raw_data)
    assert wire.split_publish_frame(b"a/b" + raw_data)[1] == b"", "no NUL: not a frame"
    assert wire.publish_frame(b"a/b") + raw_data == whole, "the head, which the data follows"


def test_only_a_sync_answer_gives_a_sync_token():
    token = wire.SYNC_PREFIX + b"abc"
    assert wire.sync_token(wire.SYNC_HEADER + token) == token
    assert wire.sync_token(wire.HEADER.pack(5, 1) + good_frame()) is None


@pytest.mark.parametrize("data", [{}, {"a": 1}, {"k": 1, "x": "x" * 40}, {str(i): i for i in range(14)},
                                  {str(i): i for i in range(15)}, {str(i): i for i in range(70_000)},
                                  {"_stamp": "the caller's", "b": 2}])
def test_the_stamp_is_the_last_entry_as_if_packed_from_a_copy(data):
    # The stamp is appended to the packed map; the bytes must be those of {**data, "_stamp": ...}.
    for frame in (payload.pack_frame("a/b", data, 10_000_000),
                  wire.publish_frame(*payload.pack_event("a/b", data, 10_000_000))):
        raw_tag, raw_data = frame.split(b"\x00", 1)
        back = msgpack.unpackb(raw_data, raw=False)
        assert raw_tag == b"a/b" and STAMP.match(back["_stamp"])
        assert raw_data == msgpack.packb({**data, "_stamp": back["_stamp"]}, use_bin_type=True)
        assert payload.check_published(frame, 10_000_000) == 3
    assert "_stamp" not in data or data["_stamp"] == "the caller's"


@pytest.mark.parametrize("now, text", [(1_700_000_000.0, "2023-11-14T22:13:20.000000"),
                                       (1_700_000_000.0625, "2023-11-14T22:13:20.062500"),
                                       (1_700_000_039.5, "2023-11-14T22:13:59.500000"),
                                       (1_700_000_040.25, "2023-11-14T22:14:00.250000")])
def test_a_frame_is_stamped_with_its_clock_to_the_microsecond(now, text):
    # The date-time text is made once a second, the microseconds per event: both must move with the clock.
    for pack in (None, payload.packer()):
        frame = payload.pack_frame("a/b", {"n": 1}, 1000, pack, _now=lambda: now)
        assert msgpack.unpackb(frame.split(b"\x00", 1)[1], raw=False) == {"n": 1, "_stamp": text}


def test_a_whole_frame_is_checked_like_an_event():
    frame = payload.pack_frame("t", {"blob": "x" * 100}, 10_000)
    payload.pack_frame("t", {"blob": "x" * 100}, len(frame) - 1)
    with pytest.raises(EventTooLargeError):
        payload.pack_frame("t", {"blob": "x" * 100}, len(frame) - 2)
    for tag, data in (("", {}), ("t\x00", {}), ("t", []), ("t", {"o": object()})):
        with pytest.raises(InvalidEventError):
            payload.pack_frame(tag, data, 10_000)


def test_a_barrier_frame_gives_back_its_token_and_nothing_else_passes_for_one():
    token = b"\x01" * 12
    assert wire.barrier_token(wire.barrier_frame(token)) == token
    assert wire.barrier_token(b"myco/tag\x00\x80") is None  # an event
    assert wire.barrier_token(wire.BARRIER_PREFIX[:-1] + token) is None
    assert wire.barrier_token(wire.barrier_frame(b"x" * 65)) is None  # longer than any token
