"""``type: webhook``: an HTTP POST per event, signed, retried with capped exponential backoff and jitter.

Only a 2xx answer counts as delivered. With ``secret``, ``X-Hub-Signature:
sha256=<hex HMAC-SHA256 of the body>``. With ``format: cloudevents``, ``mode``
chooses a structured body or CloudEvents binary mode (``ce-*`` headers, the
data as the body). Events of a batch already answered 2xx are not posted
again when the rest of the batch is retried. The connection is kept alive
between POSTs (the standard library's ``http.client``) and made again after
any error.
"""
from __future__ import annotations

import hashlib
import hmac
import random
import time

import http.client
import ssl
from urllib.parse import urlsplit

from eventbus import records
from daemon.forward.sinks import keys
from eventbus.brokertypes import BUILTIN
from eventbus.errors import SinkError
from eventbus.sink import Outgoing, Sink

MODES = ("structured", "binary")


class WebhookSink(Sink):
    KEYS = BUILTIN["webhook"]

    def __init__(self, url: str, secret: str | None, mode: str, timeout: float, retries: int,
                 fmt: str) -> None:
        self.url = url
        self.secret = secret.encode() if secret else None
        self.mode = mode
        self.timeout = float(timeout)
        self.retries = retries
        self.format = fmt
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.connection: http.client.HTTPConnection | None = None
        self._posted = 0  # the last seq answered 2xx

    @classmethod
    def from_endpoint_config(cls, cfg: dict) -> "WebhookSink":
        options = cls.options(cfg)
        url = options["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SinkError(f"key 'url' has value {url!r}; expected an http:// or https:// URL")
        if options["mode"] not in MODES:
            raise SinkError(f"key 'mode' has value {options['mode']!r}; expected structured or binary")
        timeout = options["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise SinkError(f"key 'timeout' has value {timeout!r}; expected seconds, a number above 0")
        return cls(url, keys.text(options, "secret", secret=True), options["mode"], timeout,
                   keys.integer(options, "retries", 3, low=0, high=100), options.get("format", "salt"))

    def request_for(self, event: Outgoing) -> tuple[dict[str, str], bytes]:
        """(headers, body) of the POST for one event."""
        if self.format == "cloudevents" and self.mode == "binary":
            headers, body = records.binary_http(event.seq, event.tag, event.data)
        elif self.format == "cloudevents":
            headers, body = {"Content-Type": "application/cloudevents+json"}, event.body
        else:
            headers, body = {"Content-Type": "application/json"}, event.body
        if self.secret is not None:
            digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature"] = f"sha256={digest}"
        return headers, body

    def _connect(self) -> http.client.HTTPConnection:
        if self.connection is None:
            if self.https:
                self.connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                              context=ssl.create_default_context())
            else:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.connection

    def _attempt(self, headers: dict[str, str], body: bytes) -> str | None:
        """POST once: ``None`` on a 2xx, else why not."""
        for fresh in (self.connection is None, True):
            connection = self._connect()
            try:
                connection.request("POST", self.target, body, headers)
                answer = connection.getresponse()
                answer.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                self.connection = None
                if fresh:  # a kept-alive connection the server had closed gets one fresh try at once
                    return f"cannot POST to {self.url}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
        if answer.will_close:
            connection.close()
            self.connection = None
        if 200 <= answer.status < 300:
            return None
        return f"{self.url} answered {answer.status} {answer.reason}"

    def _post(self, event: Outgoing) -> None:
        headers, body = self.request_for(event)
        delay = 0.1
        for attempt in range(self.retries + 1):
            reason = self._attempt(headers, body)
            if reason is None:
                return
            if attempt < self.retries:
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
        raise SinkError(reason)

    def publish(self, batch: list[Outgoing]) -> None:
        for event in batch:
            if event.seq <= self._posted:
                continue
            self._post(event)
            self._posted = event.seq

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
