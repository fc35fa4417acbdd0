"""The master/minion link protocol: messages as frames, without any socket.

Every message is a zmq multipart message whose first frame names its kind.
Minion to master (on the master's CURVE ROUTER, ``ret_port``)::

    hello   {"id": <minion id>}                       who I say I am; the key says the rest
    events  u64 first_seq, u64 floor | frame ...      relayed events, seqs first_seq, first_seq+1, ...
    batch   u64 first_seq, u64 floor | packed         the same in one frame: a msgpack array of the frames
    ping    (empty)                                   heartbeat
    fired   u64 fire_id                               a fire from the master is on my bus

Master to minion::

    welcome {"result": "accept"|"pend"|"reject"|"denied", "last": <seq>, "heartbeat": <s>, "packed": true}
    ack     u64 seq                                   every event up to seq is on the master bus
    resend  u64 seq                                   I have up to seq; send from seq + 1
    pong    (empty)                                   heartbeat answer
    who     (empty)                                   I do not know you (restarted): say hello
    fire    u64 fire_id | frame                       put this event on your bus, then say fired

An event frame is the local bus's publisher frame, ``tag NUL msgpack-map``.
``floor`` is the minion's spool head: every seq up to it was delivered or
dropped, so the master may accept a batch that starts after a gap the
minion itself made (oldest events dropped when its spool was full). An
events message carries at most ``MAX_BATCH_EVENTS`` events, all but its
last under ``MAX_BATCH_BYTES`` in all, and its seqs end by ``MAX_SEQ``
(they are u64 on the wire, acks included).

A master whose welcome says ``packed`` takes ``batch`` messages, and a
minion so welcomed sends its events that way: one frame costs the master
one receive however many events it holds, so a batch it refuses unread (a
minion over its relay budget) costs it next to nothing. A master that does
not say it (an older one) gets ``events``.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple, Sequence

import msgpack

from eventbus import minionid
from eventbus.bus import payload, wire
from eventbus.bus.relay import refused_tag
from eventbus.errors import EventTooLargeError, InvalidEventError, ProtocolError

# The one rule for ids, shared with the config (a minion the config accepts is never refused here).
valid_id = minionid.valid

HELLO = b"hello"
EVENTS = b"events"
BATCH = b"batch"
PING = b"ping"
FIRED = b"fired"
WELCOME = b"welcome"
ACK = b"ack"
RESEND = b"resend"
PONG = b"pong"
WHO = b"who"
FIRE = b"fire"

RESULTS = ("accept", "pend", "reject", "denied")

# The master's key offer on publish_port answers any request with [KEY_OFFER, <its Z85 public key>].
KEY_OFFER = b"key"

SEQ = struct.Struct(">Q")
BATCH_HEADER = struct.Struct(">QQ")
MAX_SEQ = 2 ** 64 - 1
# A batch's size: what a minion sends at most and the master takes at most. The master reads its minions'
# messages in turn, so this bounds how long one minion's batch (a flood's) delays another minion's.
MAX_BATCH_EVENTS = 100
MAX_BATCH_BYTES = 512 * 1024
# A packed batch's array may say more events than a minion sends (the master refuses it as oversize), but
# past this it is not even unpacked.
PACKED_MAX_EVENTS = 2 * MAX_BATCH_EVENTS
# Whether this master's welcome offers ``batch`` messages (its link socket takes a batch in one frame).
OFFER_PACKED = True


def oversize(events: Sequence[bytes]) -> bool:
    """Whether a batch's events are more than a minion sends at once (its last event may be of any size)."""
    return len(events) > MAX_BATCH_EVENTS or sum(map(len, events[:-1])) >= MAX_BATCH_BYTES


class Message(NamedTuple):
    """One parsed link message: its kind and its fields (meaning depends on the kind)."""

    kind: bytes
    value: Any = None
    frames: Sequence[bytes] = ()


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def hello(minion_id: str) -> list[bytes]:
    return [HELLO, _packb({"id": minion_id})]


def welcome(result: str, last: int, heartbeat: float) -> list[bytes]:
    body: dict[str, Any] = {"result": result, "last": last, "heartbeat": heartbeat}
    if OFFER_PACKED:
        body["packed"] = True
    return [WELCOME, _packb(body)]


def events(first_seq: int, floor: int, frames: list[bytes]) -> list[bytes]:
    return [EVENTS, BATCH_HEADER.pack(first_seq, floor), *frames]


def packed_events(first_seq: int, floor: int, frames: list[bytes]) -> list[bytes]:
    """The ``batch`` message: ``events`` in one frame, for a master that offered it."""
    return [BATCH, BATCH_HEADER.pack(first_seq, floor), _packb(frames)]


def ack(seq: int) -> list[bytes]:
    return [ACK, SEQ.pack(seq)]


def resend(seq: int) -> list[bytes]:
    return [RESEND, SEQ.pack(seq)]


def fire(fire_id: int, frame: bytes) -> list[bytes]:
    return [FIRE, SEQ.pack(fire_id), frame]


def fired(fire_id: int) -> list[bytes]:
    return [FIRED, SEQ.pack(fire_id)]


PING_MESSAGE = [PING]
PONG_MESSAGE = [PONG]
WHO_MESSAGE = [WHO]


def _seq(frame: bytes, kind: bytes) -> int:
    if len(frame) != SEQ.size:
        raise ProtocolError(f"{kind.decode()} message has a malformed sequence number")
    return SEQ.unpack(frame)[0]


def parse(frames: list[bytes]) -> Message:
    """The message of ``frames``; ``ProtocolError`` naming what is wrong with them."""
    if not frames:
        raise ProtocolError("empty message")
    kind = bytes(frames[0])
    if kind == EVENTS:
        if len(frames) < 2 or len(frames[1]) != BATCH_HEADER.size:
            raise ProtocolError("events message without its batch header")
        first, floor = BATCH_HEADER.unpack(frames[1])
        if first + len(frames) - 3 > MAX_SEQ:
            raise ProtocolError(f"events message runs past the last sequence number {MAX_SEQ}")
        return Message(kind, (first, floor), frames[2:])
    if kind == BATCH:
        return _batch(frames)
    if kind in (PING, PONG, WHO):
        return Message(kind)
    if len(frames) < 2:
        raise ProtocolError(f"{kind[:20]!r} message is missing its body")
    if kind in (ACK, RESEND, FIRED):
        return Message(kind, _seq(frames[1], kind))
    if kind == FIRE:
        if len(frames) != 3:
            raise ProtocolError("fire message must have an id and one event frame")
        return Message(kind, _seq(frames[1], kind), [frames[2]])
    if kind in (HELLO, WELCOME):
        try:
            body = msgpack.unpackb(frames[1], raw=False)
        except Exception as exc:  # msgpack raises many unrelated types on garbage
            raise ProtocolError(f"{kind.decode()} body is not msgpack: {type(exc).__name__}") from None
        if not isinstance(body, dict):
            raise ProtocolError(f"{kind.decode()} body is not a map")
        if kind == HELLO and not valid_id(body.get("id")):
            raise ProtocolError(f"hello names an invalid minion id {str(body.get('id'))[:60]!r}")
        if kind == WELCOME and body.get("result") not in RESULTS:
            raise ProtocolError("welcome carries an unknown result")
        return Message(kind, body)
    raise ProtocolError(f"unknown message kind {kind[:20]!r}")


def _batch(frames: list[bytes]) -> Message:
    """A ``batch`` message read as the ``events`` message it packs."""
    if len(frames) != 3 or len(frames[1]) != BATCH_HEADER.size:
        raise ProtocolError("batch message must have a batch header and one packed frame")
    first, floor = BATCH_HEADER.unpack(frames[1])
    try:
        packed = msgpack.unpackb(frames[2], max_array_len=PACKED_MAX_EVENTS, max_map_len=0, max_str_len=0,
                                 max_ext_len=0)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"batch message's events are not a msgpack array of at most {PACKED_MAX_EVENTS} "
                            f"frames: {type(exc).__name__}") from None
    if type(packed) is not list or not all(type(frame) is bytes for frame in packed):
        raise ProtocolError("batch message's events are not an array of byte strings")
    if first + len(packed) - 1 > MAX_SEQ:
        raise ProtocolError(f"batch message runs past the last sequence number {MAX_SEQ}")
    return Message(EVENTS, (first, floor), packed)


class RelayFramer:
    """Builds the master-bus frame of a relayed event for one minion, without unpacking its data.

    The data map ``{"id", "tag", "data", "cmd", "_stamp"}`` is written as
    msgpack by hand around the minion's already packed (and checked) data,
    so the master's per-event cost is one validation and a few joins.
    """

    def __init__(self, minion_id: str) -> None:
        self.minion_id = minion_id
        self._head = b"\x85" + _packb("id") + _packb(minion_id) + _packb("tag")
        self._middle = _packb("data")
        self._tail = _packb("cmd") + _packb("_minion_event") + _packb("_stamp")

    def frame(self, event_frame: bytes, max_size: int) -> tuple[str, bytes]:
        """(tag, master-bus frame) of a minion's ``tag NUL data`` frame; ``InvalidEventError`` if refused."""
        payload.check_published(event_frame, max_size)
        raw_tag, _, raw_data = wire.split_publish_frame(event_frame)
        tag = raw_tag.decode("utf-8")
        reason = refused_tag(tag, self.minion_id)
        if reason is not None:
            raise InvalidEventError(reason, tag=tag, reason="reserved")
        out = wire.publish_frame(raw_tag, self._head, _packb(tag), self._middle, raw_data,
                                 self._tail, _packb(payload.stamp()))
        if len(out) - 1 > max_size:
            raise EventTooLargeError(len(out) - 1, max_size, tag=tag)
        return tag, out
