"""The event format: checking, stamping, packing and unpacking events.

An event is a non-empty str tag and a dict of data. On the wire the tag is
UTF-8 and the data msgpack; the packed size of an event is the sum of both,
and it may not exceed ``max_event_size``. Nothing here touches a socket.
"""
from __future__ import annotations

import datetime
import threading
import time
from typing import Any, Callable

import msgpack

from eventbus.bus import wire
from eventbus.errors import EventTooLargeError, InvalidEventError

MAX_TAG_BYTES = 1024

_stamp_second = -1
_stamp_prefix = ""


def stamp(_now_ns: Any = time.time_ns) -> str:
    """Now in UTC, ISO-8601 without offset, always with microseconds.

    On the per-event path: the date-time text is formatted once per second,
    and the microseconds are zero-padded by slicing (cheaper than a format spec).
    """
    global _stamp_second, _stamp_prefix
    micros = _now_ns() // 1000
    second = micros // 1_000_000
    if second != _stamp_second:
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _stamp_second = second
    return _stamp_prefix + str(1_000_000 + micros % 1_000_000)[1:]


def _pack_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise InvalidEventError(f"event data holds a {type(value).__name__}, which cannot be packed")


# Tags a process fires repeat: valid ones are remembered (bounded) so the per-event check is one lookup,
# with the head their publisher frame starts with (``tag NUL``, from eventbus.bus.wire) for fire_event's path.
_valid_tags: dict[str, bytes] = {}
_frame_heads: dict[str, bytes] = {}
_VALID_TAGS_KEPT = 256


def check_tag(tag: Any) -> bytes:
    """The UTF-8 bytes of a valid tag, or ``InvalidEventError`` saying what is wrong."""
    if type(tag) is str:
        raw = _valid_tags.get(tag)
        if raw is not None:
            return raw
    raw = _check_tag(tag)
    if type(tag) is str:
        if len(_valid_tags) >= _VALID_TAGS_KEPT:
            _valid_tags.clear()
            _frame_heads.clear()
        _valid_tags[tag] = raw
        _frame_heads[tag] = wire.publish_frame(raw)
    return raw


def _check_tag(tag: Any) -> bytes:
    if not isinstance(tag, str) or not tag:
        raise InvalidEventError(f"tag must be a non-empty str, got {tag!r}")
    raw = tag.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_TAG_BYTES:
        raise InvalidEventError(f"tag is {len(raw)} bytes, over the limit of {MAX_TAG_BYTES}", tag=tag[:80])
    if "\x00" in tag:
        raise InvalidEventError("tag must not contain NUL characters", tag=tag)
    return raw


# A Packer is reused (much cheaper than packb per event) but is not thread-safe: one per thread, or one per
# publisher handle (``packer()``; a handle is for one thread).
_local = threading.local()


def packer() -> Callable[[Any], bytes]:
    """A new Packer's ``pack`` for event data, for one thread's use (``pack_frame``'s ``pack``)."""
    return msgpack.Packer(use_bin_type=True, default=_pack_default).pack


def _packing_error(exc: Exception) -> InvalidEventError:
    return exc if isinstance(exc, InvalidEventError) else InvalidEventError(f"event data cannot be packed: {exc}")


def pack_data(data: dict) -> bytes:
    """msgpack bytes of a data dict."""
    try:
        pack = _local.pack
    except AttributeError:
        pack = _local.pack = packer()
    try:
        return pack(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _packing_error(exc) from None


# msgpack of the key "_stamp" and the header of its 26-character str value.
_STAMP_KEY = b"\xa6_stamp\xba"
# Zero-padded three digits, by value: the microseconds are two lookups, not a format.
_THOUSANDS = tuple(b"%03d" % n for n in range(1000))
# (start, end, the key and "YYYY-MM-DDTHH:MM:SS." bytes) of the current second, as one value so that
# threads never see the parts of two different seconds; made once a second by ``_new_second``.
_second: tuple[float, float, bytes] = (0.0, 0.0, b"")


def _new_second(now: float) -> tuple[float, float, bytes]:
    """The second ``now`` (unix time) is in, with the start of its ``_stamp`` entry."""
    global _second
    second = int(now)
    _second = (float(second), second + 1.0,
               _STAMP_KEY + time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode())
    return _second


def _stamp_entry(_now: Any = time.time) -> bytes:
    """msgpack of ``"_stamp": stamp()`` as one map entry; the key and date-time bytes made once a second."""
    now = _now()
    start, end, prefix = _second
    if not start <= now < end:
        start, end, prefix = _new_second(now)
    micros = int((now - start) * 1e6)
    return b"".join((prefix, _THOUSANDS[micros // 1000], _THOUSANDS[micros % 1000]))


# A fixmap header (0x80 | n) one entry bigger, by the header byte of the map as packed.
_FIXMAP_PLUS_ONE = {0x80 + n: bytes((0x81 + n,)) for n in range(15)}


def pack_event(tag: Any, data: Any, max_size: int, *, add_stamp: bool = True) -> tuple[bytes, bytes]:
    """Check and pack an event into (tag bytes, data bytes), stamping ``_stamp`` on a copy of data.

    The stamp is appended to the packed map (its header one entry bigger):
    the same bytes as packing ``{**data, "_stamp": stamp()}``, without
    copying the dict.
    """
    if not isinstance(data, dict):
        raise InvalidEventError(f"event data must be a dict, got {type(data).__name__}")
    raw_tag = check_tag(tag)
    if not add_stamp:
        raw_data = pack_data(data)
    elif "_stamp" in data:
        raw_data = pack_data({**data, "_stamp": stamp()})
    else:
        raw_data = pack_data(data)
        bigger = _FIXMAP_PLUS_ONE.get(raw_data[0])
        if bigger is None:  # 15 entries or more: a map16/map32 header
            raw_data = pack_data({**data, "_stamp": stamp()})
        else:
            raw_data = b"".join((bigger, raw_data[1:], _stamp_entry()))
    size = len(raw_tag) + len(raw_data)
    if size > max_size:
        raise EventTooLargeError(size, max_size, tag=tag)
    return raw_tag, raw_data


def pack_frame(tag: Any, data: Any, max_size: int, pack: Callable[[Any], bytes] | None = None,
               _now: Any = time.time) -> bytes:
    """A publisher's whole ``tag NUL data`` frame of a stamped event, checked as ``pack_event`` does.

    ``fire_event``'s path, the same bytes as ``pack_event``'s in one join:
    the tag's cached head, the data with its map header one entry bigger and
    the ``_stamp`` entry (as ``_stamp_entry``, inline). ``pack`` is the
    caller's own ``packer()``, else this thread's is used.
    """
    if type(data) is not dict or type(tag) is not str or "_stamp" in data:
        return wire.publish_frame(*pack_event(tag, data, max_size))
    head = _frame_heads.get(tag)
    if head is None:
        head = wire.publish_frame(check_tag(tag))
    if pack is None:
        raw_data = pack_data(data)
    else:
        try:
            raw_data = pack(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _packing_error(exc) from None
    bigger = _FIXMAP_PLUS_ONE.get(raw_data[0])
    if bigger is None:  # 15 entries or more
        return wire.publish_frame(*pack_event(tag, data, max_size))
    now = _now()
    start, end, prefix = _second
    if not start <= now < end:
        start, end, prefix = _new_second(now)
    micros = int((now - start) * 1e6)
    frame = b"".join((head, bigger, raw_data[1:], prefix, _THOUSANDS[micros // 1000], _THOUSANDS[micros % 1000]))
    if len(frame) - 1 > max_size:
        raise EventTooLargeError(len(frame) - 1, max_size, tag=tag)
    return frame


def unpack_data(raw: bytes | memoryview) -> dict:
    """The data dict of packed bytes; ``InvalidEventError`` when they are not a msgpack map."""
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise InvalidEventError(f"event data is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise InvalidEventError(f"event data is a msgpack {type(data).__name__}, not a map")
    return data


# Map keys JSON has a type for; msgpack maps may also have bytes and ext keys (any process may publish them).
_JSON_KEYS = (str, int, float, bool, type(None))


def json_keys(value: Any, convert: Callable[[Any], Any]) -> Any:
    """``value`` with every map key JSON cannot hold (bytes, a msgpack ext) made text by ``convert``.

    For an encoder's fallback when it refuses event data: ``convert`` is the
    encoder's own rendering of such values, so a key reads as the same value would.
    """
    if isinstance(value, dict):
        return {(key if isinstance(key, _JSON_KEYS) else str(convert(key))): json_keys(item, convert)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_keys(item, convert) for item in value]
    return value


def check_published(frame: bytes, max_size: int, _unpackb: Any = msgpack.unpackb) -> int:
    """Check a ``tag NUL data`` frame from an untrusted publisher; return where the NUL is.

    Raises ``InvalidEventError`` naming the problem. The data is fully
    unpacked once so that no subscriber ever receives garbage. On the
    daemon's per-event path: an ASCII tag is valid UTF-8 without decoding it.
    """
    size = len(frame) - 1
    if size > max_size:
        raise EventTooLargeError(size, max_size)
    raw_tag, nul, raw_data = frame.partition(b"\x00")
    if not (nul and 0 < len(raw_tag) <= MAX_TAG_BYTES):
        raise InvalidEventError("frame is not an event: no tag, or no NUL after a tag of at most "
                                f"{MAX_TAG_BYTES} bytes", reason="not-an-event")
    if not raw_tag.isascii():
        try:
            raw_tag.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEventError("tag is not UTF-8", reason="tag-not-utf8") from None
    # A msgpack map starts with 0x80-0x8f (fixmap), 0xde or 0xdf; reject others before unpacking.
    first = raw_data[0] if raw_data else 0
    if not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
        tag = raw_tag.decode("utf-8")
        raise InvalidEventError(f"data of event {tag[:80]!r} is not a msgpack map", tag=tag, reason="not-a-map")
    try:
        _unpackb(raw_data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        tag = raw_tag.decode("utf-8")
        raise InvalidEventError(f"data of event {tag[:80]!r} is not valid msgpack: {type(exc).__name__}",
                                tag=tag, reason="bad-msgpack") from None
    return len(raw_tag)
