"""The fleet stream's messages: subject, body, headers and fleet identity of a master bus event (no I/O).

SPEC 12: subject ``<subject_prefix>.<tag with / as .>``, body the forwarders' ``salt`` record
(``{"seq", "tag", "data"}`` JSON, ``seq`` the event's seq on the master that took it), header
``Nats-Msg-Id`` = the fleet identity (``<minion id>:<relay seq>`` for a relayed event, ``<master id>:<seq>``
for any other) and ``Eventbus-Origin`` = that master's id. A tag that is no valid subject as it stands (a
space, ``*``, ``>``, an empty token) keeps the valid part and has each other character as ``_``: the body
holds the tag exactly, and importers read the body, never the subject.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from eventbus import minionid
from eventbus.errors import MalformedFrameError
from eventbus.forwarding.formats import RELAY_CMD, salt_record

HEADER_ID = "Nats-Msg-Id"
HEADER_ORIGIN = "Eventbus-Origin"
ORIGIN_KEY = "_origin"
MAX_SEQ = 2 ** 64 - 1   # a link's relay seqs and a stream's seqs are u64
# Characters a subject token may not hold: separators of the protocol and NATS' wildcards.
_BAD = str.maketrans({c: "_" for c in " \t\r\n\x00*>"})


def subject_for(prefix: str, tag: str) -> str:
    """The subject of an event tagged ``tag``: ``prefix.`` + the tag with ``/`` as ``.``, made valid."""
    tokens = tag.replace("/", ".").translate(_BAD).split(".")
    return prefix + "." + ".".join(token or "_" for token in tokens)


def relay_identity(minion_id: str, relay_seq: int) -> str:
    """The fleet identity of the event a minion relayed as ``relay_seq``: the same on every master it reached."""
    return f"{minion_id}:{relay_seq}"


def own_identity(master_id: str, seq: int) -> str:
    """The fleet identity of an event a master took itself (not relayed): its id and its own seq."""
    return f"{master_id}:{seq}"


def split_identity(identity: str) -> tuple[str, int] | None:
    """``(who, number)`` of a fleet identity; ``None`` for one that is not ``<id>:<integer>``."""
    who, sep, number = identity.rpartition(":")
    if not sep or not who or not number.isdigit() or len(number) > 20:
        return None
    return who, int(number)


def relayed(identity: str, data: Mapping[str, Any]) -> tuple[str, int] | None:
    """``(minion id, relay seq)`` of an event a minion relayed, from its fleet identity and its data; ``None``
    for any other event, and for one whose identity is no minion's (an id that cannot name a minion, a seq a
    link cannot carry, or an identity naming another minion than its data): it is then no relayed copy.

    The master keeps a file per minion named by this id and numbers by this seq (``daemon/link``), so what
    a stream message claims is checked here by the minion id rule and the link's seq bounds.
    """
    if data.get("cmd") != RELAY_CMD:
        return None
    split = split_identity(identity)
    if split is None or split[0] != data.get("id") or not is_relay(*split):
        return None
    return split


def is_relay(minion_id: str, relay_seq: int) -> bool:
    """Whether ``minion_id`` can name a minion and ``relay_seq`` is a seq its link can carry."""
    return minionid.valid(minion_id) and type(relay_seq) is int and 0 < relay_seq <= MAX_SEQ


def body(seq: int, tag: str, data: dict) -> bytes:
    """The message body of an event: the ``salt`` record."""
    return salt_record(seq, tag, data)


def headers(identity: str, origin: str) -> dict[str, str]:
    """The message headers of an event with fleet identity ``identity`` taken by master ``origin``."""
    return {HEADER_ID: identity, HEADER_ORIGIN: origin}


@dataclass(frozen=True)
class FleetEvent:
    """One message of the fleet stream as a master bus event: ``data`` carries ``_origin``."""

    stream_seq: int
    tag: str
    data: dict
    origin: str
    identity: str

    def as_record(self) -> dict[str, Any]:
        """``{"seq", "tag", "data"}`` with the stream seq: what a fleet reader yields."""
        return {"seq": self.stream_seq, "tag": self.tag, "data": self.data}


def decode(stream_seq: int, raw_body: bytes, raw_headers: Mapping[str, str] | None) -> FleetEvent:
    """The event of one stream message; ``MalformedFrameError`` for a message no master wrote."""
    found = raw_headers or {}
    origin = found.get(HEADER_ORIGIN)
    identity = found.get(HEADER_ID)
    if not isinstance(origin, str) or not origin or not isinstance(identity, str) or not identity:
        raise MalformedFrameError(f"stream message {stream_seq} has no {HEADER_ORIGIN} or {HEADER_ID} header",
                                  what="fleet record")
    try:
        record = orjson.loads(raw_body)
    except orjson.JSONDecodeError:
        raise MalformedFrameError(f"stream message {stream_seq} is not JSON", what="fleet record") from None
    if not isinstance(record, dict) or not isinstance(record.get("tag"), str) or not record["tag"] \
            or not isinstance(record.get("data"), dict):
        raise MalformedFrameError(f"stream message {stream_seq} is not a {{seq, tag, data}} record",
                                  what="fleet record")
    data = record["data"]
    data[ORIGIN_KEY] = origin
    return FleetEvent(stream_seq, record["tag"], data, origin, identity)
