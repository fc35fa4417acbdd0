"""Server-Sent Events records. No sockets, no threads.

A record is Salt's ``rest_cherrypy`` layout plus the bus sequence number as
``id:``, so a browser's ``EventSource`` sends it back as ``Last-Event-ID``::

    id: 1042
    tag: salt/job/20130802115730568475/new
    data: {"tag": "salt/job/20130802115730568475/new", "data": {...}}

Records are formatted once per event and shared by every stream.
"""
from __future__ import annotations

import base64
import json
from typing import Any, NamedTuple

GAP_TAG = "eventbus/stream/gap"
RETRY = b"retry: 400\n\n"
KEEPALIVE = b": keepalive\n\n"
KEEPALIVE_AFTER = 15.0


class Record(NamedTuple):
    """One formatted event: its bus seq (0 for a stream notice), tag, ``data["id"]`` and SSE bytes."""

    seq: int
    tag: str
    event_id: Any
    raw: bytes


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return repr(value)


_encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), default=_json_default).encode


def event_record(seq: int, tag: str, data: dict) -> Record:
    """The record of a bus event; the tag is made single-line so it cannot forge SSE fields."""
    body = _encode({"tag": tag, "data": data})
    if "\n" in tag or "\r" in tag:
        tag = tag.replace("\r", "\\r").replace("\n", "\\n")
    raw = f"id: {seq}\ntag: {tag}\ndata: {body}\n\n".encode("utf-8", "surrogatepass")
    event_id = data.get("id")
    return Record(seq, tag, event_id if isinstance(event_id, str) else None, raw)


def gap_record(lost: int, restarted: bool = False) -> Record:
    """The notice that ``lost`` events are gone before what follows (no ``id:``, so resume is unchanged)."""
    data: dict[str, Any] = {"lost": lost}
    if restarted:
        data["restarted"] = True
    body = _encode({"tag": GAP_TAG, "data": data})
    return Record(0, GAP_TAG, None, f"tag: {GAP_TAG}\ndata: {body}\n\n".encode())


def parse_last_event_id(text: str | None) -> int | None:
    """The seq a client last saw, from ``Last-Event-ID``; ``ValueError`` when it is not one of ours."""
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 20:
        raise ValueError(f"Last-Event-ID {text[:40]!r} is not an event id (a whole number)")
    return int(text)
