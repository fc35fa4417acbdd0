"""The records a forwarder sends: Salt-style JSON records and CloudEvents 1.0, built from bus events.

No I/O here. ``outgoing(seq, tag, data, fmt)`` turns one master bus event
into an ``eventbus.sink.Outgoing`` whose ``body`` is the JSON record in the
broker's ``format``.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import orjson
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from eventbus.bus import payload
from eventbus.sink import Outgoing

FORMATS = ("salt", "cloudevents")
RELAY_CMD = "_minion_event"
_JSON_FORMAT = JSONFormat()
_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``: orjson (ten times the standard library's C encoder, the
    forwarder's largest per-event cost), the standard library for what orjson refuses (integers
    past 64 bits); values and map keys JSON has no type for (bytes) become their ``str``."""
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS)
    except TypeError:
        try:
            return _std_dumps(value).encode()
        except TypeError:
            return _std_dumps(payload.json_keys(value, str)).encode()


def _dumps(value: Any) -> str:
    return _dumps_bytes(value).decode()


def json_text(value: Any) -> str:
    """``value`` as compact JSON text (bytes and other non-JSON values as their ``str``)."""
    return _dumps(value)


def minion_id(data: dict) -> str | None:
    """The relaying minion's id for a relayed event, else ``None``."""
    if data.get("cmd") == RELAY_CMD and isinstance(data.get("id"), str):
        return data["id"]
    return None


def event_time(data: dict) -> datetime:
    """When the event was fired (its ``_stamp``, UTC), or now when it has none or a bad one."""
    stamp = data.get("_stamp")
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            moment = None
        if moment is not None:
            return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """``2026-11-21T09:19:17.751376Z``: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def salt_record(seq: int, tag: str, data: dict) -> bytes:
    """The ``format: salt`` record: ``{"seq", "tag", "data"}`` as compact UTF-8 JSON."""
    return _dumps_bytes({"seq": seq, "tag": tag, "data": data})


def cloud_event(seq: int, tag: str, data: dict, moment: datetime | None = None) -> CloudEvent:
    """The CloudEvents 1.0 event of one bus event: id (the seq), source (master or minion), type (the tag), time."""
    relayed = minion_id(data)
    source = f"/eventbus/minion/{relayed}" if relayed is not None else "/eventbus/master"
    attributes: dict[str, Any] = {
        "specversion": "1.0", "id": str(seq), "source": source, "type": tag,
        "time": moment or event_time(data), "datacontenttype": "application/json"}
    # The SDK's JSON writer knows no datetimes inside data; keep data JSON-safe as the salt record does.
    return CloudEvent(attributes, json.loads(_dumps(data)))


def cloudevents_record(seq: int, tag: str, data: dict, moment: datetime | None = None) -> bytes:
    """The ``format: cloudevents`` record: a structured-mode CloudEvents 1.0 JSON event."""
    return _JSON_FORMAT.write(cloud_event(seq, tag, data, moment))


def binary_http(seq: int, tag: str, data: dict) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a CloudEvents binary-mode HTTP request for one bus event."""
    message = ce_http.to_binary(cloud_event(seq, tag, data), _JSON_FORMAT)
    return dict(message.headers), message.body


def _stamp_time(data: dict) -> str:
    """``time`` of an event: its ``_stamp`` + ``Z`` when the bus wrote it (the hot path), else parsed."""
    stamp = data.get("_stamp")
    if type(stamp) is str and len(stamp) == 26 and stamp[10] == "T" and stamp[19] == ".":
        return stamp + "Z"
    return rfc3339(event_time(data))


def outgoing(seq: int, tag: str, data: dict, fmt: str | None = "salt") -> Outgoing:
    """One bus event, ready for a sink: fields plus ``body`` in ``fmt`` (``salt`` or ``cloudevents``;
    ``None``: no body, for a sink that does not send it)."""
    if fmt == "salt":
        body = salt_record(seq, tag, data)
    elif fmt == "cloudevents":
        body = cloudevents_record(seq, tag, data)
    elif fmt is None:
        body = b""
    else:
        raise ValueError(f"unknown record format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return Outgoing(seq, tag, data, minion_id(data), _stamp_time(data), body)
