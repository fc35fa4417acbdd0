"""``type: webhook``: an HTTP POST per event, signed, retried with capped exponential backoff and jitter.

Only a 2xx answer counts as delivered. With ``secret``, ``X-Hub-Signature:
sha256=<hex HMAC-SHA256 of the body>``. With ``format: cloudevents``, ``mode``
chooses a structured body or CloudEvents binary mode (``ce-*`` headers, the
data as the body). Events of a batch already answered 2xx are not posted
again when the rest of the batch is retried.
"""
from __future__ import annotations

import hashlib
import hmac
import random
import time

from tornado.httpclient import HTTPClient, HTTPClientError, HTTPRequest

from eventbus import records
from eventbus.errors import SinkError
from eventbus.sink import REQUIRED, Outgoing, Sink

MODES = ("structured", "binary")


class WebhookSink(Sink):
    KEYS = {"url": REQUIRED, "secret": None, "mode": "structured", "timeout": 10, "retries": 3,
            "format": "salt"}

    def __init__(self, url: str, secret: str | None, mode: str, timeout: float, retries: int,
                 fmt: str) -> None:
        self.url = url
        self.secret = secret.encode() if secret else None
        self.mode = mode
        self.timeout = float(timeout)
        self.retries = retries
        self.format = fmt
        self.client: HTTPClient | None = None
        self._posted = 0  # the last seq answered 2xx

    @classmethod
    def from_endpoint_config(cls, cfg: dict) -> "WebhookSink":
        options = cls.options(cfg)
        url = options["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SinkError(f"key 'url' has value {url!r}; expected an http:// or https:// URL")
        if options["mode"] not in MODES:
            raise SinkError(f"key 'mode' has value {options['mode']!r}; expected structured or binary")
        return cls(url, options["secret"], options["mode"], options["timeout"], int(options["retries"]),
                   options.get("format", "salt"))

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

    def _post(self, event: Outgoing) -> None:
        headers, body = self.request_for(event)
        request = HTTPRequest(self.url, method="POST", headers=headers, body=body,
                              connect_timeout=self.timeout, request_timeout=self.timeout)
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                self.client.fetch(request)  # type: ignore[union-attr]  # raises on non-2xx
                return
            except HTTPClientError as exc:
                reason = f"{self.url} answered {exc.code}"
            except OSError as exc:
                reason = f"cannot reach {self.url}: {exc.strerror or exc}"
            if attempt < self.retries:
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
        raise SinkError(reason)

    def publish(self, batch: list[Outgoing]) -> None:
        if self.client is None:
            self.client = HTTPClient()
        for event in batch:
            if event.seq <= self._posted:
                continue
            self._post(event)
            self._posted = event.seq

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
