"""Test support for CloudEvents: a signing client, a real outbound HTTP server that checks signatures,
and a master-bus listener that says which ``cloudevents/*`` events were fired."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import uuid
from typing import Any

from eventbus import event
from tests.helpers import wait_for

ORDER_SCHEMA = {"$schema": "http://json-schema.org/draft/2019-09/schema#", "type": "object",
                "properties": {"order": {"type": "object", "properties": {
                    "qty": {"type": "integer", "minimum": 1}}, "required": ["qty"]}},
                "required": ["order"]}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def structured(type_: str = "com.example.order", id_: str | None = None, version: str = "1.0",
               data: Any = None, **extra: Any) -> dict:
    ev = {"specversion": "1.0", "id": id_ or uuid.uuid4().hex, "source": "/shop", "type": type_,
          "version": version, "data": {"order": {"qty": 2}} if data is None else data}
    ev.update(extra)
    return ev


class Outbound:
    """A real HTTP server standing for the application's outbound URL; keeps the signed bodies it got."""

    def __init__(self, secret: str | None = None, fail_first: int = 0) -> None:
        self.secret = secret
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.fail_left = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                if outer.secret is not None and not hmac.compare_digest(
                        self.headers.get("X-Hub-Signature", ""), sign(outer.secret, body)):
                    outer.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/inbox"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BusWatch:
    """Every ``cloudevents/*`` event fired on the master bus since it opened."""

    def __init__(self, master_opts: Any) -> None:
        self.handle = event.get_event("master", opts=master_opts, listen=True)
        self.handle.subscribe("cloudevents/")
        self.seen: list[tuple[str, dict]] = []

    def until(self, ce_id: str, timeout: float = 20) -> list[tuple[str, dict]]:
        """Read until the event with CloudEvents id ``ce_id`` arrives; everything seen so far."""
        def arrived() -> bool:
            ev = self.handle.get_event(wait=0.2, full=True)
            if ev is not None and ev["tag"].startswith("cloudevents/"):
                self.seen.append((ev["tag"], ev["data"]))
            return any(data.get("id") == ce_id for _tag, data in self.seen)
        wait_for(arrived, timeout, interval=0, what=f"cloudevent {ce_id} on the master bus")
        return self.seen

    def close(self) -> None:
        self.handle.destroy()
