"""Server-Sent Events records (docs/api.md, ``GET /events``). No sockets, no threads.

A record is Salt's ``rest_cherrypy`` layout plus the bus seq as ``id:`` (a browser sends it back as
``Last-Event-ID``); the reader's gap notice (``eventbus.bus.inbox``) becomes a record without ``id:``.
Records are formatted once per event and shared by every stream.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from eventbus.bus import payload

RETRY = b"retry: 400\n\n"
KEEPALIVE = b": keepalive\n\n"
KEEPALIVE_AFTER = 15.0


class Record:
    """One event as a stream sends it: bus seq (0 for a notice), tag, ``data["id"]`` and its SSE bytes.

    ``raw`` is formatted when a stream first needs it, then shared by every
    stream: an API that nobody streams from (one that only ingests) formats
    nothing, which was a quarter of its CPU per ingested event.
    """

    __slots__ = ("seq", "tag", "event_id", "_data", "_raw")

    def __init__(self, seq: int, tag: str, event_id: Any, raw: bytes | None = None, data: Any = None) -> None:
        self.seq = seq
        self.tag = tag
        self.event_id = event_id
        self._raw = raw
        self._data = data

    @property
    def raw(self) -> bytes:
        raw = self._raw
        if raw is None:  # two threads may both format it: the same bytes, so no lock
            raw = self._raw = _format(self.seq, self.tag, self._data)
        return raw


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)


_encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), default=_json_default).encode


def event_record(seq: int | None, tag: str, data: dict) -> Record:
    """The record of a bus event, or of the reader's gap notice (``seq`` ``None``: no ``id:``, so the
    client's resume position stays). Its bytes are formatted on first use; the tag is made single-line
    so it cannot forge SSE fields."""
    body = {"tag": tag, "data": data}  # the JSON keeps the tag as it is
    if "\n" in tag or "\r" in tag:
        tag = tag.replace("\r", "\\r").replace("\n", "\\n")
    event_id = data.get("id")
    return Record(seq or 0, tag, event_id if isinstance(event_id, str) else None, data=body)


def _format(seq: int, tag: str, body: dict) -> bytes:
    """The SSE bytes of a record: ``tag`` single-line already, ``body`` its ``{"tag", "data"}``."""
    try:
        text = _encode(body)
    except TypeError:  # a map key JSON has no type for (bytes): as text, the way such a value reads
        text = _encode(payload.json_keys(body, _json_default))
    head = f"id: {seq}\n" if seq else ""
    return f"{head}tag: {tag}\ndata: {text}\n\n".encode("utf-8", "surrogatepass")


def parse_last_event_id(text: str | None) -> int | None:
    """The seq a client last saw, from ``Last-Event-ID``; ``ValueError`` when it is not one of ours."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 20:
        raise ValueError(f"Last-Event-ID {text[:40]!r} is not an event id (a whole number)")
    return int(text)
