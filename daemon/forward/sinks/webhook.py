"""``type: webhook``: an HTTP POST per event, signed, retried with capped exponential backoff and jitter.

Only a 2xx answer counts as delivered. With ``secret``, ``X-Hub-Signature:
sha256=<hex HMAC-SHA256 of the body>``. With ``format: cloudevents``, ``mode``
chooses a structured body or CloudEvents binary mode (``ce-*`` headers, the
data as the body). Events of a batch already answered 2xx are not posted
again when the rest of the batch is retried. The connection is kept alive
between POSTs (``eventbus.httppost``).
"""
from __future__ import annotations

from eventbus.daemon.forward.sinks import brokerkeys
from eventbus import httppost, signing
from eventbus.forwarding import formats
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.errors import SinkError
from eventbus.sink import Outgoing, Sink

MODES = ("structured", "binary")


class WebhookSink(Sink):
    KEYS = BUILTIN["webhook"]

    def __init__(self, url: str, secret: str | None, mode: str, timeout: float, retries: int,
                 fmt: str) -> None:
        self.url = url
        self.secret = secret
        self.mode = mode
        self.timeout = float(timeout)
        self.retries = retries
        self.format = fmt
        self.poster = httppost.Poster()
        self._posted = 0  # the last seq answered 2xx
        # ``source: fleet``: seqs are not in bus order; the seqs of the batch being published answered 2xx.
        self.ordered = True
        self._posted_now: set[int] = set()

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
        sink = cls(url, brokerkeys.text(options, "secret", secret=True), options["mode"], timeout,
                   brokerkeys.integer(options, "retries", 3, low=0, high=100), options.get("format", "salt"))
        sink.ordered = cfg.get("source", "bus") != "fleet"
        return sink

    def request_for(self, event: Outgoing) -> tuple[dict[str, str], bytes]:
        """(headers, body) of the POST for one event."""
        if self.format == "cloudevents" and self.mode == "binary":
            headers, body = formats.binary_http(event.seq, event.tag, event.data)
        elif self.format == "cloudevents":
            headers, body = {"Content-Type": "application/cloudevents+json"}, event.body
        else:
            headers, body = {"Content-Type": "application/json"}, event.body
        if self.secret:
            headers["X-Hub-Signature"] = signing.sign(body, self.secret)
        return headers, body

    def publish(self, batch: list[Outgoing]) -> None:
        for event in batch:
            if event.seq <= self._posted if self.ordered else event.seq in self._posted_now:
                continue
            headers, body = self.request_for(event)
            reason = self.poster.deliver(self.url, body, headers, self.timeout, self.retries)
            if reason is not None:
                raise SinkError(reason)
            if self.ordered:
                self._posted = event.seq
            else:
                self._posted_now.add(event.seq)
        self._posted_now.clear()

    def close(self) -> None:
        self.poster.close()
