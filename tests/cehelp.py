"""Test support for CloudEvents: a signing client, a real outbound HTTP server that checks signatures,
a master-bus listener that says which ``cloudevents/*`` events were fired, and a running API set up
as a shop (the ``shop`` fixture, one per test module that imports it)."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import uuid
from typing import Any

import pytest
import requests

from eventbus import event
from tests.apinode import running_api
from tests.helpers import run_cli, wait_for

STRUCTURED = "application/cloudevents+json"

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


class Shop:
    """A running API with type com.example.order 1.0 (finalized), 2.0 (draft), channels shop and other."""

    def __init__(self, env, outbound: Outbound) -> None:
        self.env = env
        self.conf = str(env.config_dir)
        schema = env.root / "order.json"
        schema.write_text(json.dumps(ORDER_SCHEMA))
        for args in (("eventtype", "add", "com.example.order", "--schema", str(schema)),
                     ("eventtype", "finalize", "com.example.order", "--version", "1.0"),
                     ("eventtype", "add", "com.example.order", "--schema", str(schema), "--version", "2.0")):
            done = run_cli(*args, "-c", self.conf)
            assert done.returncode == 0, done.stderr
        self.secret = self.add_channel("shop", "--outbound-url", outbound.url)
        self.other_secret = self.add_channel("other")
        outbound.secret = self.secret
        self.outbound = outbound
        self.url = env.url("/cloudevents/shop")

    def add_channel(self, name: str, *args: str) -> str:
        done = run_cli("channel", "add", name, *args, "-c", self.conf)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("secret: ") and lines[1].endswith(f"/cloudevents/{name}")
        return lines[0].split(" ", 1)[1]

    def post(self, body: bytes, content_type: str = STRUCTURED, secret: str | None = "", channel: str = "shop",
             headers: dict | None = None) -> requests.Response:
        sent = {"Content-Type": content_type}
        if secret is not None:
            sent["X-Hub-Signature"] = sign(secret or self.secret, body)
        sent.update(headers or {})
        return requests.post(self.env.url(f"/cloudevents/{channel}"), data=body, headers=sent, timeout=10)

    def post_event(self, ev: dict, **kwargs) -> requests.Response:
        return self.post(json.dumps(ev).encode(), **kwargs)


@pytest.fixture(scope="module")
def shop():
    outbound = Outbound()
    try:
        with running_api(max_event_size=8192) as env:
            yield Shop(env, outbound)
    finally:
        outbound.close()
