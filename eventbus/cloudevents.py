"""A client for ``POST /cloudevents/<channel>``: build, sign and send CloudEvents from Python.

    from eventbus.cloudevents import send
    answer = send("http://127.0.0.1:8000/cloudevents/orders", secret,
                  type="com.example.order", source="/orders", version="1.0", data={"order": 7})

``answer`` is the API's JSON answer (``{"success", "accepted", "duplicates"}``);
a refusal raises ``CloudEventRefused`` with the status and the API's reason.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Sequence

from eventbus.channels import signature
from eventbus.errors import EventBusError

__all__ = ["CloudEventRefused", "event", "send", "send_events", "sign"]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


class CloudEventRefused(EventBusError):
    """The API refused a request: ``status`` and its one-line ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature`` header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return signature(secret, body)


def event(type: str, source: str, data: Any, version: str = "1.0", id: str | None = None,
          **attributes: Any) -> dict:
    """A CloudEvents 1.0 event as a dict (``id`` a new UUID and ``time`` now unless given)."""
    built = {"specversion": "1.0", "id": id or str(uuid.uuid4()), "source": source, "type": type,
             "version": version, "time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
             "datacontenttype": "application/json", "data": data}
    built.update(attributes)
    return built


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> dict:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the caller's URL
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        try:
            reason = json.loads(text).get("return", text)
        except ValueError:
            reason = text
        raise CloudEventRefused(exc.code, str(reason)) from None


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
