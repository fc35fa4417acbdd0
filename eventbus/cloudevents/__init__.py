"""A client for ``POST /cloudevents/<channel>``: build, sign and send CloudEvents from Python.

    from eventbus.cloudevents import send
    answer = send("http://127.0.0.1:8000/cloudevents/orders", secret,
                  type="com.example.order", source="/orders", version="1.0", data={"order": 7})

``answer`` is the API's JSON answer (``{"success", "accepted", "duplicates"}``);
a refusal raises ``CloudEventRefused`` with the status and the API's reason, no
answer at all ``eventbus.errors.HttpConnectionError``. Each thread keeps its
connection to the API open for its next call (``eventbus.httppost``).
"""
from __future__ import annotations

import json
import urllib.parse
import uuid
from datetime import datetime, timezone
from typing import Any, Sequence

from eventbus import httppost
from eventbus.errors import EventBusError
from eventbus.signing import sign

__all__ = ["CloudEventRefused", "event", "send", "send_events", "sign"]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


class CloudEventRefused(EventBusError):
    """The API refused a request: ``status`` and its one-line ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def event(type: str, source: str, data: Any, version: str | None = "1.0", id: str | None = None,
          **attributes: Any) -> dict:
    """A CloudEvents 1.0 event as a dict (``id`` a new UUID and ``time`` now unless given; no ``version``: None)."""
    built = {"specversion": "1.0", "id": id or str(uuid.uuid4()), "source": source, "type": type,
             "version": version, "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
             "datacontenttype": "application/json", "data": data}
    if version is None:
        del built["version"]
    built.update(attributes)
    return built


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> dict:
    answer = httppost.post(url, body, headers, timeout)
    if answer.ok:
        return json.loads(answer.body or b"{}")
    try:
        reason = json.loads(answer.body)["return"]
    except (ValueError, TypeError, KeyError):
        reason = answer.body.decode("utf-8", "replace")
    raise CloudEventRefused(answer.status, str(reason))


def send(url: str, secret: str, *, type: str, source: str, data: Any, version: str = "1.0",
         id: str | None = None, mode: str = "structured", timeout: float = 10.0, **attributes: Any) -> dict:
    """Sign and POST one event in ``structured`` or ``binary`` mode; the API's JSON answer."""
    built = event(type, source, data, version, id, **attributes)
    if mode == "structured":
        body = json.dumps(built).encode("utf-8")
        headers = {"Content-Type": STRUCTURED}
    elif mode == "binary":
        body = json.dumps(built.pop("data")).encode("utf-8")
        headers = {"Content-Type": built.pop("datacontenttype")}
        for name, value in built.items():
            headers["ce-" + name] = urllib.parse.quote(str(value), safe=" !#$&'()*+,/:;=?@[]~")
    else:
        raise ValueError(f"mode {mode!r}: expected structured or binary")
    headers["X-Hub-Signature"] = sign(body, secret)
    return _post(url, body, headers, timeout)


def send_events(url: str, secret: str, events: Sequence[dict], timeout: float = 10.0) -> dict:
    """Sign and POST ``events`` (dicts, e.g. from ``event()``) in batch mode, all or nothing."""
    body = json.dumps(list(events)).encode("utf-8")
    return _post(url, body, {"Content-Type": BATCH, "X-Hub-Signature": sign(body, secret)}, timeout)
