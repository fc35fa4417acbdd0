"""One broker's drain: takes batches from its outbox to its sink, at its own pace, in its own thread.

A failed publish (the broker down, slow to answer, refusing credentials)
marks the broker down (one log line and one ``down`` event with the reason,
secrets hidden), then the same batch is retried with capped exponential
backoff and jitter; the first success after that reports ``up``.
"""
from __future__ import annotations

import logging
import random
import re
import threading
from typing import Any, Callable

from eventbus.daemon.forward.reader import READ_BATCH
from eventbus.forwarding import formats
from eventbus.errors import EventBusError
from eventbus.forwarding.config import BrokerConfig
from eventbus.forwarding.outbox import Outbox
from eventbus.sink import Outgoing, wants_body

log = logging.getLogger(__name__)

BATCH = READ_BATCH  # the reader's batch: a read takes whole outbox rows
BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0  # a recovered broker waits at most this long for its next try

Report = Callable[[str, dict], None]  # (tag, data) to fire on the master bus


class Backoff:
    """Capped exponential delays with jitter: ``first``, 2x, 4x ... up to ``cap``, each times 0.5-1."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * (2 ** min(self.failures, 30)))
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret and any URL password replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(://[^/@:\s]*:)[^/@\s]+@", r"\1***@", text)


class BrokerWorker:
    """Drains ``outbox`` into the sink made by ``sink_class`` (any class with ``eventbus.sink.METHODS``)."""

    def __init__(self, broker: BrokerConfig, sink_class: type, outbox: Outbox, report: Report,
                 sink: Any = None) -> None:
        self.broker = broker
        self.sink_class = sink_class
        self.format = broker.format if wants_body(sink_class) else None
        self.outbox = outbox
        self.report = report
        self.sink = sink
        self.down = False
        self.error = ""
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"forward-{broker.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stats(self) -> dict:
        return {"name": self.broker.name, "type": self.broker.type, "state": "down" if self.down else "up",
                "delivered": self.outbox.delivered, "pending": self.outbox.pending,
                "dropped": self.outbox.dropped, "error": self.error}

    def _batch(self) -> list[Outgoing]:
        fmt = self.format
        return [formats.outgoing(seq, tag, data, fmt) for seq, tag, data in self.outbox.read(BATCH)]

    def _failed(self, exc: BaseException, backoff: Backoff) -> None:
        reason = redact(str(exc).strip() or type(exc).__name__, self.broker.secrets)
        if not self.down or reason != self.error:
            log.warning("broker %s (%s) is down: %s; %d events wait in its outbox, retrying",
                        self.broker.name, self.broker.type, reason, self.outbox.pending)
        if not self.down:
            self.down = True
            self.report(f"eventbus/forward/{self.broker.name}/down", {"error": reason})
        self.error = reason
        self.stopping.wait(backoff.next())

    def _run(self) -> None:
        backoff = Backoff()
        batch: list[Outgoing] = []
        while not self.stopping.is_set():
            try:
                if self.sink is None:
                    self.sink = self.sink_class.from_endpoint_config(dict(self.broker.options))
                if not batch:
                    self.wake.clear()
                    batch = self._batch()
                    if not batch:
                        self.wake.wait(0.5)
                        continue
                self.sink.publish(batch)
            except Exception as exc:  # any failure of a sink means "not delivered": report, back off, retry
                if batch:
                    # Back to the outbox: while we wait, the bound may drop some of it; the retry reads
                    # again what is still there (an event is delivered or dropped, never both).
                    self.outbox.rewind()
                    batch = []
                self._failed(exc, backoff)
                continue
            try:
                self.outbox.ack(batch[-1].seq, len(batch))
            except EventBusError as exc:  # the disk refuses: the broker has them; at worst they go again
                log.error("broker %s: %s; retrying in 1 s", self.broker.name, exc)
                self.stopping.wait(1.0)
                continue
            batch = []
            backoff.reset()
            if self.down:
                self.down = False
                self.error = ""
                log.warning("broker %s (%s) is up again", self.broker.name, self.broker.type)
                self.report(f"eventbus/forward/{self.broker.name}/up", {})

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the drain to end and close the sink; ``False`` if it is still inside a publish."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("broker %s did not finish its publish within %g s; its batch stays in the outbox",
                        self.broker.name, timeout)
            return False
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception as exc:  # closing a broken connection may fail; the outbox keeps the events
                log.warning("broker %s: closing its sink failed: %s", self.broker.name,
                            redact(str(exc), self.broker.secrets))
        return True
