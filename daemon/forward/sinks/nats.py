"""The ``nats`` sink: JetStream publishes with ``Nats-Msg-Id`` = seq, every ack awaited.

nats-py is asyncio and ``publish`` is called from a plain thread, so the
sink owns a private event loop running in its own thread and hands it
coroutines with ``run_coroutine_threadsafe``. A batch goes out with
``publish_async`` (pipelined on one connection, so stored in bus order) and
``publish`` returns once JetStream acknowledged all of it, or raises
``SinkError`` within ``ACK_TIMEOUT``. A message published twice (a retried
batch, or nats-py's reconnect buffer flushed after an outage) is stored once:
JetStream drops a repeated ``Nats-Msg-Id`` within the stream's
duplicate window (2 minutes unless the stream says otherwise).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from typing import Any, Coroutine

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from eventbus.daemon.forward.sinks import brokerkeys
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.sink import Outgoing, Sink, SinkError

DEFAULTS = BUILTIN["nats"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds for the first connection of a client (and for stream set-up)
ACK_TIMEOUT = 10.0     # seconds for a whole batch to be acknowledged


@dataclass(frozen=True)
class NatsSettings:
    """The ``nats`` type keys (docs/forward.md, Config)."""

    name: str
    url: str
    subject_prefix: str
    stream: str | None

    @classmethod
    def from_config(cls, cfg: dict) -> "NatsSettings":
        return cls(name=brokerkeys.broker_name(cfg),
                   url=brokerkeys.text(cfg, "url", DEFAULTS["url"], required=True) or "",
                   subject_prefix=brokerkeys.text(cfg, "subject_prefix", DEFAULTS["subject_prefix"], required=True) or "",
                   stream=brokerkeys.text(cfg, "stream"))

    def where(self) -> str:
        return f"NATS at {_without_credentials(self.url)}"


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def subject_for(prefix: str, tag: str) -> str:
    """The subject an event is published on: ``PREFIX.`` + the tag with ``/`` turned into ``.``."""
    return f"{prefix}.{tag.replace('/', '.')}"


class NatsSink(Sink):
    """``type: nats``: JetStream, subject per tag, de-duplicated by ``Nats-Msg-Id``."""

    KEYS = DEFAULTS

    def __init__(self, cfg: dict) -> None:
        self.settings = NatsSettings.from_config(cfg)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._js: Any = None
        self._connected = False

    def _run(self, coroutine: Coroutine, timeout: float) -> Any:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            # The sink's own loop, started on first use (and again after close()).
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name=f"nats-sink-{self.settings.name}")
            self._thread.start()
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    # -- on the sink's loop ------------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        log.debug("%s: %r", self.settings.where(), exc)

    async def _on_disconnected(self) -> None:
        self._connected = False

    async def _on_reconnected(self) -> None:
        self._connected = True

    async def _connect(self) -> None:
        client = Client()
        try:
            await asyncio.wait_for(client.connect(
                servers=[self.settings.url], connect_timeout=CONNECT_TIMEOUT, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=self._on_error,
                disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected),
                CONNECT_TIMEOUT)
            js = client.jetstream(timeout=CONNECT_TIMEOUT)
            if self.settings.stream:
                await self._ensure_stream(js)
        except BaseException:
            await client.close()
            raise
        self._client, self._js, self._connected = client, js, True

    async def _ensure_stream(self, js: Any) -> None:
        """Create ``stream`` over ``PREFIX.>`` unless it exists (an existing one is left as its owner made it)."""
        try:
            await js.stream_info(self.settings.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.settings.stream, subjects=[f"{self.settings.subject_prefix}.>"])

    async def _publish(self, batch: list[Outgoing]) -> None:
        if self._client is None or self._client.is_closed:
            try:
                await self._connect()
            except (asyncio.TimeoutError, nats.errors.Error, OSError) as exc:
                reason = "no connection within {:.0f} s".format(CONNECT_TIMEOUT) \
                    if isinstance(exc, asyncio.TimeoutError) else f"{exc.__class__.__name__}: {exc}"
                raise SinkError(f"{self.settings.where()}: cannot connect: {reason}") from None
        js, prefix = self._js, self.settings.subject_prefix
        acks: list[asyncio.Future] = []
        try:
            # No wait_stall: it costs a task per message, and a batch never
            # reaches the client's 4,000 in-flight limit (the whole call is bounded anyway).
            for item in batch:
                acks.append(await js.publish_async(subject_for(prefix, item.tag), item.body,
                                                   headers={"Nats-Msg-Id": str(item.seq)}))
            await asyncio.wait_for(asyncio.gather(*acks), ACK_TIMEOUT)
        finally:
            for ack in acks:
                ack.cancel()  # a no-op on the acknowledged; frees the client's slots for the rest

    async def _close(self) -> None:
        client, self._client, self._connected = self._client, None, False
        if client is not None and not client.is_closed:
            await client.close()

    # -- from the publishing thread ----------------------------------------
    def publish(self, batch: list[Outgoing]) -> None:
        if not batch:
            return
        try:
            # _publish bounds each of its waits; this outer bound only guards against a wedged loop.
            self._run(self._publish(batch), 3 * CONNECT_TIMEOUT + ACK_TIMEOUT)
        except (concurrent.futures.TimeoutError, asyncio.TimeoutError, nats.errors.TimeoutError):
            raise SinkError(f"{self.settings.where()}: {len(batch)} messages not acknowledged in time") from None
        except nats.js.errors.NoStreamResponseError:
            raise SinkError(f"{self.settings.where()}: no JetStream stream captures subjects "
                            f"{self.settings.subject_prefix}.> (set `stream` to have one created)") from None
        except (nats.errors.Error, OSError) as exc:
            raise SinkError(f"{self.settings.where()}: {exc.__class__.__name__}: {exc}") from None

    def is_ready(self) -> bool:
        return self._connected

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            self._run(self._close(), CONNECT_TIMEOUT)
        except (concurrent.futures.TimeoutError, nats.errors.Error, OSError) as exc:
            log.warning("%s: close: %r", self.settings.where(), exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CONNECT_TIMEOUT)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None
