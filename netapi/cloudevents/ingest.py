"""``POST /cloudevents/<channel>`` without sockets: signature, content type, attributes, schema, duplicates.

``Ingest.check(channel, raw, headers)`` returns the events to fire (and the ids to answer as duplicates) or
raises ``Refusal`` with the HTTP status, the ``eventbus.error`` code and the reason, checking in the order
of docs/cloudevents.md, Ingest. ``Ingest.counts`` keeps the metrics' counters.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping

from eventbus.cloudevents.channels import Channel, Channels
from eventbus.cloudevents.eventtypes import EventTypes, UnknownType

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("specversion", "id", "source", "type", "version")
DEDUP_MAX = 100_000
DEDUP_AGE = 24 * 3600.0
# The metrics' code of a refusal that has no eventbus.error code (it is not reported outbound).
UNREPORTED_CODES = {401: "BadSignature", 404: "UnknownChannel"}
# Binary-mode header names that are HTTP's, not attributes.
_loads = json.JSONDecoder().decode


class Refusal(Exception):
    """One refused request: ``status``, ``code`` (``eventbus.error``'s, or ``None`` for 401/404) and ``reason``."""

    def __init__(self, status: int, code: str | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass
class Accepted:
    """What a good request becomes: bus events to fire and ids to answer."""

    channel: Channel
    events: list[tuple[str, dict]] = field(default_factory=list)   # (tag, data)
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)       # (source, id) to remember once fired


class Seen:
    """``source``+``id`` pairs accepted within the last ``DEDUP_MAX`` events or ``DEDUP_AGE`` seconds."""

    def __init__(self, limit: int = DEDUP_MAX, age: float = DEDUP_AGE) -> None:
        self.limit = limit
        self.age = age
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        stamp = self._seen.get(key)
        return stamp is not None and time.time() - stamp < self.age

    def add(self, key: tuple[str, str]) -> None:
        now = time.time()
        seen = self._seen
        seen[key] = now
        seen.move_to_end(key)
        while len(seen) > self.limit:
            seen.popitem(last=False)
        while seen:
            oldest_key = next(iter(seen))
            if now - seen[oldest_key] < self.age:
                break
            del seen[oldest_key]


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json_media(media: str) -> bool:
    return media == "application/json" or media == "text/json" or media.endswith("+json")


def _bad(reason: str, index: int | None, code: str = "InvalidParameter") -> Refusal:
    where = f"event {index}: " if index is not None else ""
    return Refusal(400, code, where + reason)


def _header_value(name: str, value: str, index: None = None) -> str:
    """A ``ce-*`` header's value, percent-decoded (HTTP binding 3.1.3.2); printable ASCII only."""
    if any(ord(c) < 0x20 or ord(c) > 0x7e for c in value):
        raise _bad(f"header {name} holds a control character or a non-ASCII byte; "
                   "percent-encode it", index)
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise _bad(f"header {name} is not valid percent-encoded UTF-8", index) from None


class Ingest:
    """The checks of one API process; thread-safe (one lock around the duplicate table)."""

    def __init__(self, channels: Channels, types: EventTypes, max_event_size: int) -> None:
        self.channels = channels
        self.types = types
        self.max_event_size = max_event_size
        self.seen = Seen()
        self.lock = threading.Lock()
        self.accepted_by_type: Counter[str] = Counter()
        self.refused_by_status_code: Counter[tuple[int, str]] = Counter()

    def counts(self) -> dict:
        """``{"accepted": {type: n}, "refused": {(status, code): n}}`` since the API started (for metrics)."""
        return {"accepted": dict(self.accepted_by_type), "refused": dict(self.refused_by_status_code)}

    def channel(self, name: str) -> Channel:
        found = self.channels.get(name)
        if found is None:
            raise Refusal(404, None, f"unknown channel {name[:100]!r}")
        return found

    def check(self, channel: Channel, raw: bytes, headers: Mapping[str, str], too_large: bool = False) -> Accepted:
        """The events of one request (channel already found), or ``Refusal``."""
        if not channel.verify(raw, headers.get("X-Hub-Signature")):
            why = "missing" if not headers.get("X-Hub-Signature") else "wrong"
            raise Refusal(401, None, f"X-Hub-Signature is {why}: send sha256= and the hex HMAC-SHA256 of "
                                     "the exact body with the channel's secret")
        if too_large or len(raw) > self.max_event_size:
            raise Refusal(413, "PayloadTooLarge", f"the request body is over the limit of {self.max_event_size} bytes")
        media = _media(headers.get("Content-Type"))
        result = Accepted(channel)
        if media == STRUCTURED:
            self._take(result, self._parse_json(raw, "the structured event"), None)
        elif media == BATCH:
            batch = self._parse_json(raw, "the batch")
            if not isinstance(batch, list):
                raise _bad("a batch must be a JSON array of events", None)
            for index, event in enumerate(batch):
                self._take(result, event, index)
        elif "ce-specversion" in {k.lower() for k in headers}:
            self._take(result, self._binary(raw, headers, media), None)
        else:
            raise Refusal(415, "UnsupportedMediaType",
                          f"Content-Type {media[:60]!r} is not supported: send {STRUCTURED}, {BATCH}, or "
                          "binary mode (ce-* headers with a JSON body)")
        return result

    def remember(self, result: Accepted) -> None:
        """Record a request's events as fired (after they reached the bus)."""
        with self.lock:
            for key in result.keys:
                self.seen.add(key)
            for _tag, data in result.events:
                self.accepted_by_type[data["type"]] += 1

    def refused(self, code: str | None, status: int) -> None:
        """Count one refused request under its HTTP status and its code (``UNREPORTED_CODES`` when ``None``)."""
        with self.lock:
            self.refused_by_status_code[status, code or UNREPORTED_CODES.get(status, "Refused")] += 1

    @staticmethod
    def _parse_json(raw: bytes, what: str) -> Any:
        try:
            return _loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _bad(f"{what} is not UTF-8 text", None) from None
        except ValueError as exc:
            raise _bad(f"{what} is not valid JSON: {exc}", None) from None

    def _binary(self, raw: bytes, headers: Mapping[str, str], media: str) -> dict:
        if media and not _is_json_media(media):
            raise Refusal(415, "UnsupportedMediaType",
                          f"binary mode data must be JSON (Content-Type application/json), not {media[:60]!r}")
        event: dict[str, Any] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower.startswith("ce-") and len(lower) > 3:
                event[lower[3:]] = _header_value(lower, value)
        if media:
            event["datacontenttype"] = media
        if raw.strip():
            event["data"] = self._parse_json(raw, "the data")
        return event

    def _take(self, result: Accepted, event: Any, index: int | None) -> None:
        if not isinstance(event, dict):
            raise _bad("an event must be a JSON object", index)
        for attribute in REQUIRED:
            value = event.get(attribute)
            if not isinstance(value, str) or not value:
                state = "missing" if value is None else "not a non-empty string"
                raise _bad(f"required attribute {attribute!r} is {state}", index)
        if event["specversion"] != "1.0":
            raise _bad(f"attribute 'specversion' is {event['specversion'][:20]!r}; only '1.0' is accepted", index)
        if "data_base64" in event:
            raise _bad("attribute 'data_base64' is not accepted: data must be JSON", index)
        try:
            validate = self.types.validator(event["type"], event["version"])
        except UnknownType as exc:
            raise _bad(exc.message, index, "UnknownEventType") from None
        data = event.get("data")
        error = next(validate.iter_errors(data), None)
        if error is not None:
            path = error.json_path.replace("$", "data", 1)
            raise _bad(f"schema violation at {path}: {error.message[:200]} (rule {error.validator})",
                       index, "SchemaViolation")
        key = (event["source"], event["id"])
        with self.lock:
            duplicate = key in self.seen or key in result.keys
        if duplicate:
            result.duplicates.append(event["id"])
            return
        bus_data = dict(event)
        bus_data["channel"] = result.channel.name
        bus_data.setdefault("data", None)
        result.events.append(("cloudevents/" + event["type"], bus_data))
        result.accepted.append(event["id"])
        result.keys.append(key)
