"""Refusals reported to a channel's outbound URL as signed ``eventbus.error`` CloudEvents.

One daemon thread drains a bounded queue, so a slow outbound URL never holds a request thread; an
undeliverable report is logged and dropped (docs/cloudevents.md, Refusals reported outbound).
"""
from __future__ import annotations

import json
import logging
import queue
import threading

from eventbus import cloudevents, httppost, signing
from eventbus.cloudevents.channels import Channel

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
TRIES = 3
TIMEOUT = 5.0


def error_event(channel: str, code: str, message: str) -> bytes:
    """The structured ``eventbus.error`` CloudEvent body."""
    return json.dumps(cloudevents.event("eventbus.error", f"/eventbus/cloudevents/{channel}",
                                        {"code": code, "message": message}, version=None)).encode("utf-8")


class ErrorReporter:
    """Posts error reports in the background."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue(QUEUE_MAX)
        self.poster = httppost.Poster()  # for the reporting thread alone
        self.thread = threading.Thread(target=self._run, name="cloudevents-errors", daemon=True)
        self.thread.start()

    def report(self, channel: Channel, code: str, message: str) -> None:
        if not channel.outbound_url:
            return
        body = error_event(channel.name, code, message)
        try:
            self.queue.put_nowait((channel.outbound_url, signing.sign(body, channel.secret), body))
        except queue.Full:
            log.warning("channel %s: error report dropped (%d waiting)", channel.name, QUEUE_MAX)

    def close(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                self.poster.close()
                return
            url, signed, body = item
            headers = {"Content-Type": "application/cloudevents+json", "X-Hub-Signature": signed}
            problem = self.poster.deliver(url, body, headers, TIMEOUT, TRIES - 1)
            if problem:
                log.warning("error report to %s not delivered: %s", url, problem)
