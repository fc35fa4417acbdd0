"""The ``pika`` sink: batches into a durable RabbitMQ fanout exchange, persistent, under publisher confirms.

pika's blocking channel waits for each confirm in turn (about 2,000/s here),
so the sink drives a ``SelectConnection`` on an I/O loop in a thread it owns
and pipelines a whole batch: every message is sent, then ``publish`` waits
(bounded) until the broker has confirmed them all. A nack, a closed channel,
a lost connection or the deadline fails the batch with ``SinkError``, drops
the connection, and the next ``publish`` connects anew (a broker restart is
just that). One batch is in flight at a time, so bus order is kept.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Callable

import pika
import pika.exceptions
from pika.spec import Basic

from eventbus.daemon.forward.sinks import brokerkeys
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.sink import Outgoing, Sink, SinkError

DEFAULTS = BUILTIN["pika"]

log = logging.getLogger(__name__)
# pika logs every failed connect at ERROR, several lines a retry; the worker's one "down" line says it.
logging.getLogger("pika").setLevel(logging.CRITICAL)

CONNECT_TIMEOUT = 5.0   # seconds for TCP + AMQP handshake + declarations
CONFIRM_TIMEOUT = 10.0  # seconds for a whole batch to be confirmed


@dataclass(frozen=True)
class RabbitMQSettings:
    """The ``pika`` type keys (docs/forward.md, Config)."""

    name: str
    host: str
    port: int
    username: str
    password: str
    vhost: str
    queues: tuple[str, ...]
    exchange_name: str
    content_type: str = "application/json"

    @classmethod
    def from_config(cls, cfg: dict) -> "RabbitMQSettings":
        return cls(name=brokerkeys.broker_name(cfg),
                   host=brokerkeys.text(cfg, "url", DEFAULTS["url"], required=True) or DEFAULTS["url"],
                   port=brokerkeys.integer(cfg, "port", DEFAULTS["port"]),
                   username=brokerkeys.text(cfg, "username", DEFAULTS["username"]) or DEFAULTS["username"],
                   password=brokerkeys.text(cfg, "password", DEFAULTS["password"], secret=True) or "",
                   vhost=brokerkeys.text(cfg, "vhost", DEFAULTS["vhost"]) or DEFAULTS["vhost"],
                   queues=brokerkeys.text_list(cfg, "queues", tuple(DEFAULTS["queues"])),
                   exchange_name=brokerkeys.text(cfg, "exchange_name", DEFAULTS["exchange_name"], required=True)
                   or DEFAULTS["exchange_name"],
                   content_type="application/cloudevents+json" if cfg.get("format") == "cloudevents"
                   else "application/json")

    def parameters(self) -> pika.ConnectionParameters:
        """Connection parameters; ``url`` may be a bare host or an ``amqp://`` URL (Rasa accepts both)."""
        credentials = pika.PlainCredentials(self.username, self.password)
        if self.host.startswith(("amqp://", "amqps://")):
            params = pika.URLParameters(self.host)
            params.credentials = credentials
        else:
            params = pika.ConnectionParameters(host=self.host, port=self.port, virtual_host=self.vhost,
                                               credentials=credentials)
        params.connection_attempts = 1
        params.socket_timeout = CONNECT_TIMEOUT
        params.stack_timeout = CONNECT_TIMEOUT
        params.blocked_connection_timeout = CONFIRM_TIMEOUT
        return params

    def where(self) -> str:
        """The endpoint for messages: host, port and vhost, never credentials."""
        params = self.parameters()
        return f"RabbitMQ at {params.host}:{params.port} vhost {params.virtual_host!r}"


class _Pending:
    """The one batch waiting for its confirms."""

    def __init__(self, first_tag: int, last_tag: int) -> None:
        self.outstanding = set(range(first_tag, last_tag + 1))
        self.done = threading.Event()
        self.error: str | None = None

    def fail(self, reason: str) -> None:
        if not self.done.is_set():
            self.error = reason
            self.done.set()

    def confirm(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.outstanding = {t for t in self.outstanding if t > tag}
        else:
            self.outstanding.discard(tag)
        if not self.outstanding:
            self.done.set()


class _Link:
    """One connection and its confirm-mode channel, alive while its I/O thread runs.

    Everything touching pika objects runs in that thread; other threads
    reach it only through ``add_callback_threadsafe``.
    """

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self.opened = threading.Event()
        self.error: str | None = None      # why opening failed or the link closed
        self.usable = False
        self.connection: pika.SelectConnection | None = None
        self.channel = None
        self.next_tag = 0
        self.pending: _Pending | None = None
        self.thread = threading.Thread(target=self._run, name=f"pika-sink-{settings.name}", daemon=True)
        self.thread.start()

    # -- the I/O thread ---------------------------------------------------
    def _run(self) -> None:
        try:
            self.connection = pika.SelectConnection(
                self.settings.parameters(), on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error, on_close_callback=self._on_closed)
        except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
            self._lost(f"cannot connect: {exc!r}")
            return
        self.connection.ioloop.start()

    def _lost(self, reason: str) -> None:
        self.usable = False
        if self.error is None:
            self.error = reason
        if self.pending is not None:
            self.pending.fail(reason)
        self.opened.set()

    def _on_open_error(self, connection: pika.SelectConnection, exc: BaseException) -> None:
        self._lost(f"cannot connect: {describe(exc)}")
        connection.ioloop.stop()

    def _on_closed(self, connection: pika.SelectConnection, reason: BaseException) -> None:
        self._lost(f"connection closed: {describe(reason)}")
        connection.ioloop.stop()

    def _on_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel) -> None:  # noqa: ANN001 - pika's channel type
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        name = self.settings.exchange_name
        steps: list[Callable[[Callable], None]] = [
            lambda done: channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=done),
            lambda done: channel.exchange_declare(exchange=name, exchange_type="fanout", durable=True,
                                                  callback=done)]
        for queue in self.settings.queues:
            steps.append(lambda done, q=queue: channel.queue_declare(queue=q, durable=True, callback=done))
            steps.append(lambda done, q=queue: channel.queue_bind(queue=q, exchange=name, callback=done))
        self._chain(steps)

    def _chain(self, steps: list[Callable[[Callable], None]]) -> None:
        if not steps:
            self.usable = True
            self.opened.set()
            return
        steps[0](lambda _frame: self._chain(steps[1:]))

    def _on_channel_closed(self, channel, reason: BaseException) -> None:  # noqa: ANN001
        self._lost(f"channel closed: {describe(reason)}")
        if self.connection is not None and self.connection.is_open:
            self.connection.close()

    def _on_confirm(self, frame) -> None:  # noqa: ANN001 - pika's method frame
        method = frame.method
        pending = self.pending
        if pending is None:
            return
        if isinstance(method, Basic.Nack):
            pending.fail(f"the broker refused message {method.delivery_tag} (nack)")
        else:
            pending.confirm(method.delivery_tag, method.multiple)

    def _send(self, batch: list[Outgoing], pending: _Pending) -> None:
        if not self.usable or self.channel is None:
            pending.fail(self.error or "not connected")
            return
        exchange, content_type = self.settings.exchange_name, self.settings.content_type
        publish = self.channel.basic_publish
        try:
            for item in batch:
                publish(exchange, "", item.body,
                        pika.BasicProperties(delivery_mode=2, content_type=content_type,
                                             headers={"seq": item.seq}))
        except (pika.exceptions.AMQPError, OSError) as exc:
            pending.fail(f"publish failed: {describe(exc)}")

    # -- called from the publishing thread -------------------------------
    def submit(self, batch: list[Outgoing]) -> _Pending:
        """Hand ``batch`` to the I/O thread; the returned pending's ``done`` is set once all are confirmed."""
        first = self.next_tag + 1
        self.next_tag += len(batch)
        pending = _Pending(first, self.next_tag)
        self.pending = pending
        self._call(lambda: self._send(batch, pending))
        return pending

    def _call(self, callback: Callable[[], None]) -> None:
        connection = self.connection
        try:
            if connection is None:
                raise pika.exceptions.AMQPError("no connection")
            connection.ioloop.add_callback_threadsafe(callback)
        except (pika.exceptions.AMQPError, RuntimeError, OSError) as exc:
            self._lost(f"I/O loop gone: {describe(exc)}")

    def shut(self, timeout: float = 5.0) -> None:
        """Close the connection and wait (bounded) for the I/O thread to end."""
        def close() -> None:
            connection = self.connection
            if connection is None:
                return
            if not (connection.is_closed or connection.is_closing):
                connection.close()
            # A broker that stopped answering never sends close-ok: end the loop anyway.
            connection.ioloop.call_later(2.0, connection.ioloop.stop)
        if self.thread.is_alive():
            self._call(close)
            self.thread.join(timeout)


def describe(exc: BaseException) -> str:
    """pika's exceptions as one readable line (``ProbableAuthenticationError`` carries the broker's words;
    a failed connect wraps the socket's own error, e.g. ``Connection refused``, in its first argument)."""
    text = str(exc) or "; ".join(str(arg) or repr(arg) for arg in exc.args) or exc.__class__.__name__
    refused = re.search(r"last exception - \w+: (\w+Error)\((\d+), '([^']+)'\)", text)
    if refused:
        text = f"{refused.group(3)} ({refused.group(1)})"
    return f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text


class RabbitMQSink(Sink):
    """``type: pika``: a durable fanout exchange bound to durable queues; persistent messages, header ``seq``."""

    KEYS = DEFAULTS

    def __init__(self, cfg: dict) -> None:
        self.settings = RabbitMQSettings.from_config(cfg)
        self._link: _Link | None = None

    def _connected(self) -> _Link:
        link = self._link
        if link is not None and link.usable:
            return link
        if link is not None:
            link.shut()
        link = self._link = _Link(self.settings)
        if not link.opened.wait(CONNECT_TIMEOUT + 2.0):
            link.shut()
            self._link = None
            raise SinkError(f"{self.settings.where()}: no connection within {CONNECT_TIMEOUT:.0f} s")
        if not link.usable:
            self._link = None
            link.shut()
            raise SinkError(f"{self.settings.where()}: {link.error}")
        return link

    def publish(self, batch: list[Outgoing]) -> None:
        if not batch:
            return
        link = self._connected()
        pending = link.submit(batch)
        if not pending.done.wait(CONFIRM_TIMEOUT):
            pending.fail("timeout")
            self._drop(link)
            raise SinkError(f"{self.settings.where()}: {len(pending.outstanding)} of {len(batch)} messages "
                            f"not confirmed within {CONFIRM_TIMEOUT:.0f} s")
        link.pending = None
        if pending.error is not None:
            self._drop(link)
            raise SinkError(f"{self.settings.where()}: {pending.error}")

    def _drop(self, link: _Link) -> None:
        # A failed batch leaves the channel's confirm state unknown: start clean next time.
        link.shut()
        if self._link is link:
            self._link = None

    def is_ready(self) -> bool:
        return self._link is not None and self._link.usable

    def close(self) -> None:
        if self._link is not None:
            self._link.shut()
            self._link = None
