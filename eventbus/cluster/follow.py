"""Reading the fleet stream in stream order from a stream seq: one thread, its own asyncio loop, one connection.

``FleetReader(settings, start_seq)`` hands out, through ``get``, each stream message as a
``records.FleetEvent`` (its ``stream_seq`` is the fleet-wide id), a ``Gap`` where the stream no longer
holds what was wanted (a purge, ``max_msgs``, an age limit), and, for a reader started with no seq, one
``Position`` first: the stream's last seq when it first answered, live from there. It reads with an
ordered consumer and resumes after the last seq it handed out when the cluster goes away and comes back
(one log line each way). Messages ``records.decode`` refuses are skipped, counted in ``skipped`` and
logged once. Used by the REST API (``eventbus.netapi.sse.fleet``) for ``/events`` in cluster mode.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Union

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from eventbus.cluster import jetstream, records
from eventbus.cluster.records import FleetEvent
from eventbus.cluster.settings import ClusterSettings
from eventbus.errors import ClusterError, MalformedFrameError

log = logging.getLogger(__name__)

# Seconds between tries while the cluster does not answer.
RETRY_WAIT = 1.0
# The consumer's idle heartbeat: nats-py re-creates an ordered consumer that missed two.
HEARTBEAT = 2.0
# A reader that got nothing this long while the stream holds more re-subscribes from where it is.
STALL = 6.0
POLL = 0.5
JS_TIMEOUT = 5.0
BUFFER = 4096


@dataclass(frozen=True)
class Gap:
    """``lost`` stream messages the stream no longer holds; reading goes on at ``resumed_at``."""

    lost: int
    resumed_at: int


@dataclass(frozen=True)
class Position:
    """Where a reader with no start seq begins: after ``last_seq``, the stream's last seq at first contact."""

    last_seq: int


Item = Union[FleetEvent, Gap, Position]


class FleetReader:
    """A thread following the fleet stream from ``start_seq`` (``None``: live from its end); ``get`` reads it."""

    def __init__(self, settings: ClusterSettings, start_seq: int | None = None, *, name: str,
                 buffer: int = BUFFER, quiet: bool = False) -> None:
        self.settings = settings
        self.name = name
        self.next_seq = max(start_seq, 1) if start_seq is not None else 0
        self._positioned = start_seq is not None
        self.up = False
        self.error: str | None = None
        self.skipped = 0
        # A short-lived reader (a resume) logs its outages at debug: the API's fleet feed says it once.
        self._log_level = logging.DEBUG if quiet else logging.WARNING
        self._queue: queue.Queue[Item] = queue.Queue(buffer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._skip_logged = False
        self._was_down = False

    # -- the caller's side ----------------------------------------------------------------

    def start(self) -> FleetReader:
        self._thread = threading.Thread(target=self._thread_main, name=f"fleet-reader {self.name}", daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item, waiting up to ``timeout`` s (``None``: forever, ``0``: not at all); ``None`` if none."""
        try:
            if timeout is not None and timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def read_upto(self) -> int:
        """The last stream seq this reader has consumed (handed out, or skipped as unreadable)."""
        return max(self.next_seq - 1, 0)

    def close(self) -> None:
        """Stop the thread and close the connection."""
        self._stopping = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop already ended
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FleetReader:
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    # -- the reader thread ------------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._task = loop.create_task(self._run())
            if self._stopping:
                self._task.cancel()
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _run(self) -> None:
        while not self._stopping:
            reconnected = asyncio.Event()

            async def on_disconnect() -> None:
                self._down("the connection to the cluster was lost")

            async def on_reconnect() -> None:
                reconnected.set()

            try:
                client = await jetstream.connect(self.settings, name=self.name, disconnected_cb=on_disconnect,
                                                 reconnected_cb=on_reconnect)
            except ClusterError as exc:
                self._down(exc.args[0] if exc.args else str(exc))
                await asyncio.sleep(RETRY_WAIT)
                continue
            try:
                await self._follow(client, reconnected)
            finally:
                try:
                    await client.close()
                except Exception as exc:  # noqa: BLE001 - closing a broken connection; nothing left to keep
                    log.debug("fleet reader %s: closing: %s", self.name, exc)

    async def _follow(self, client: Client, reconnected: asyncio.Event) -> None:
        js = client.jetstream(timeout=JS_TIMEOUT)
        while not self._stopping:
            reconnected.clear()
            try:
                subscription = await self._subscribe(js)
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                self._down(jetstream.reason(exc, self.settings))
                await asyncio.sleep(RETRY_WAIT)
                continue
            self._up()
            try:
                await self._drain(js, subscription, reconnected)
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                if isinstance(exc, nats.errors.ConnectionClosedError):
                    return
                self._down(jetstream.reason(exc, self.settings))
                await asyncio.sleep(RETRY_WAIT)
            finally:
                try:
                    await subscription.unsubscribe()
                except (nats.errors.Error, OSError) as exc:
                    log.debug("fleet reader %s: unsubscribing: %s", self.name, exc)

    async def _subscribe(self, js: Any) -> Any:
        """An ordered consumer from ``next_seq``, after telling what the stream no longer holds."""
        info = await jetstream.ensure_stream(js, self.settings)
        state = info.state
        if not self._positioned:
            self._positioned = True
            self.next_seq = state.last_seq + 1
            await self._put(Position(state.last_seq))
        elif state.first_seq > self.next_seq:
            lost = state.first_seq - self.next_seq
            self.next_seq = state.first_seq
            await self._put(Gap(lost, state.first_seq))
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.next_seq)
        return await js.subscribe(self.settings.subject_prefix + ".>", stream=self.settings.stream,
                                  ordered_consumer=True, idle_heartbeat=HEARTBEAT, config=config)

    async def _drain(self, js: Any, subscription: Any, reconnected: asyncio.Event) -> None:
        """Hand out what the consumer delivers; return to re-subscribe after a reconnect or a stall."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while not self._stopping:
            if reconnected.is_set():
                return
            try:
                message = await subscription.next_msg(timeout=POLL)
            except nats.errors.TimeoutError:
                if loop.time() - quiet_since >= STALL:
                    quiet_since = loop.time()
                    info = await js.stream_info(self.settings.stream)
                    self._up()
                    if info.state.last_seq >= self.next_seq:
                        log.debug("fleet reader %s: no message past %d while the stream holds %d; re-subscribing",
                                  self.name, self.next_seq - 1, info.state.last_seq)
                        return
                continue
            quiet_since = loop.time()
            seq = message.metadata.sequence.stream
            if seq < self.next_seq:
                continue  # delivered again after a consumer reset
            self._up()
            if seq > self.next_seq:
                await self._put(Gap(seq - self.next_seq, seq))
            try:
                item = records.decode(seq, message.data, message.headers)
            except MalformedFrameError as exc:
                self.skipped += 1
                if not self._skip_logged:
                    self._skip_logged = True
                    log.log(self._log_level, "fleet reader %s: skipping messages no master wrote (first: %s)",
                            self.name, exc)
            else:
                await self._put(item)
            # Only now: ``read_upto`` past a seq means its item is queued (a resume's end test).
            self.next_seq = seq + 1

    async def _put(self, item: Item) -> None:
        while not self._stopping:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.01)

    def _down(self, why: str) -> None:
        if self._stopping:
            return
        self.error = why
        if self.up or not self._was_down:
            where = f"stream seq {self.next_seq}" if self._positioned else "the stream's end"
            log.log(self._log_level, "fleet reader %s: the cluster does not answer (%s); reading on from %s "
                                     "when it is back", self.name, why, where)
        self.up = False
        self._was_down = True

    def _up(self) -> None:
        if not self.up:
            if self._was_down:
                log.log(logging.DEBUG if self._log_level == logging.DEBUG else logging.INFO,
                        "fleet reader %s: the cluster answers again; reading from stream seq %d",
                        self.name, self.next_seq)
            self.up = True
            self.error = None
