"""A shared durable pull consumer of the fleet stream, run in a thread with a private asyncio loop.

Several processes (one per master) open the same durable name (``reactor``, ``forward_<broker>``): JetStream
hands each stream message to one of them. ``FleetConsumer.get`` yields each message as a ``FleetEvent``
(``records.decode``; a message no master wrote is acked, counted and logged once per kind), and a message
is acked only when the caller says it is finished with it (``done(stream_seq)``). Until then the consumer
tells JetStream every ``ack_wait / 3`` s that the message is still being worked on, so a live caller keeps
it however long its work takes; a process that dies stops doing so, and after ``ack_wait`` JetStream hands
the message to another process of the same durable name. ``stop`` gives back (naks) what was not done.

The thread reconnects by itself (nats-py's reconnects, then a fresh connection if that one is closed),
re-creates the consumer when it is gone (from the stream seq after the last ack floor it saw; a consumer
made for the first time starts at the stream's end) and waits through leader changes. Backpressure:
JetStream's ``max_ack_pending`` across all processes, and ``bound`` messages held per process.
``call`` runs a coroutine on the same connection (the reactor's fleet ledger uses it).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
import hashlib
import logging
import queue
import re
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from eventbus.cluster import jetstream, records
from eventbus.cluster.settings import ClusterSettings
from eventbus.errors import ClusterError, MalformedFrameError

log = logging.getLogger(__name__)

ACK_WAIT = 10.0          # s without word from its holder before a message goes to another process
MAX_ACK_PENDING = 10_000  # messages handed out and not acked, across all processes of one durable name
BOUND = 2_000            # messages one process holds (handed out or queued) before it stops fetching
FETCH_BATCH = 256
FETCH_WAIT = 1.0
CHECK_EVERY = 5.0        # s between checks that the consumer still exists (and reads of its ack floor)
RETRY_WAIT = 1.0
CALL_TIMEOUT = 10.0

T = TypeVar("T")
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]")


def durable_name(purpose: str, name: str | None = None) -> str:
    """A valid consumer name for ``purpose`` (and a broker ``name``): ``forward_<name>``, with any character
    a consumer name may not hold as ``_`` plus a short hash of the name, so two names never share one."""
    if name is None:
        return purpose
    clean = _NAME_BAD.sub("_", name)
    if clean != name:
        clean += "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{purpose}_{clean}"


def _problem_kind(exc: MalformedFrameError) -> str:
    """What is wrong with a message, without its seq (one log line per kind)."""
    return re.sub(r"stream message \d+ ", "", str(exc))


class FleetConsumer:
    """One process's share of the durable pull consumer ``durable`` on the fleet stream of ``settings``."""

    def __init__(self, settings: ClusterSettings, durable: str, *, client_name: str, bound: int = BOUND,
                 max_ack_pending: int = MAX_ACK_PENDING, ack_wait: float = ACK_WAIT,
                 start_time: float | None = None) -> None:
        self.settings = settings
        self.durable = durable
        self.client_name = client_name
        self.bound = bound
        self.max_ack_pending = max_ack_pending
        self.ack_wait = ack_wait
        # A consumer made for the first time starts with the messages stored from then (unix time), else at the
        # stream's end.
        self.start_time = start_time
        self.state = "down"
        self.error: str | None = "not connected yet"
        self.skipped = 0          # messages no master wrote, acked and not handed out
        self.delivered = 0        # messages handed to the caller
        self.acked = 0            # messages the caller finished
        self.floor = 0            # the consumer's ack floor (stream seq) when last read
        self._events: queue.SimpleQueue[records.FleetEvent] = queue.SimpleQueue()
        self._held: dict[int, Any] = {}   # stream seq -> its nats-py message (loop thread only)
        self._kinds_logged: set[str] = set()
        self._said_down = False
        self._check_now = False
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._js: Any = None
        self._ready = threading.Event()
        self._made = threading.Event()  # the consumer exists (found or made) once
        self._thread = threading.Thread(target=self._run, name=f"fleet-{durable}", daemon=True)

    # -- the caller's side (any thread) ------------------------------------------------

    def start(self, wait: float = 10.0) -> bool:
        """Start the thread; it connects (and keeps trying) on its own. Whether the consumer exists within
        ``wait`` s (what is stored from then on is handed out; a cluster away is not waited for longer)."""
        self._thread.start()
        self._ready.wait(5)
        return self._made.wait(wait)

    def get(self, timeout: float) -> records.FleetEvent | None:
        """The next fleet event for this process, or ``None`` after ``timeout`` s."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def done(self, stream_seq: int) -> None:
        """The caller is finished with the event ``stream_seq``: ack it (it goes to no one else)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._ack, stream_seq)
            except RuntimeError:  # the loop closed meanwhile (stopping): the event is redelivered elsewhere
                pass

    @property
    def held(self) -> int:
        """Events handed out (or queued for the caller) and not done."""
        return len(self._held)

    def call(self, factory: Callable[[Any], Awaitable[T]], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``factory(js)`` on this consumer's connection; ``ClusterError`` when the cluster is away or
        refuses."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise ClusterError("the fleet consumer is not running")
        future = asyncio.run_coroutine_threadsafe(self._call(factory, timeout), loop)
        try:
            return future.result(timeout + 1)
        except TimeoutError:
            future.cancel()
            raise ClusterError("no answer in time") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Give back (nak) every event not done, close the connection and end the thread."""
        self._stopping.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        """What ``eventbus status`` and the status files show about this consumer."""
        return {"durable": self.durable, "state": self.state, "error": self.error, "held": self.held,
                "delivered": self.delivered, "acked": self.acked, "skipped": self.skipped, "floor": self.floor}

    # -- the loop thread ----------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._ready.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _call(self, factory: Callable[[Any], Awaitable[T]], timeout: float) -> T:
        js = self._js
        if js is None:
            raise ClusterError(self.error or "not connected")
        try:
            return await asyncio.wait_for(factory(js), timeout)
        except (asyncio.TimeoutError, nats.errors.Error) as exc:
            raise ClusterError(jetstream.reason(exc, self.settings)) from None

    def _down(self, why: str) -> None:
        self.state, self.error, self._js = "down", why, None
        if not self._said_down:
            self._said_down = True
            log.error("fleet consumer %s: the cluster is away (%s); fleet events wait in stream %s",
                      self.durable, why, self.settings.stream)

    def _up(self) -> None:
        if self.state != "up":
            self.state, self.error = "up", None
            if self._said_down:
                log.warning("fleet consumer %s: reading stream %s again", self.durable, self.settings.stream)
            self._said_down = False

    async def _main(self) -> None:
        while not self._stopping.is_set():
            try:
                self._client = await jetstream.connect(self.settings, name=self.client_name,
                                                       disconnected_cb=self._disconnected,
                                                       reconnected_cb=self._reconnected)
            except ClusterError as exc:
                self._down(str(exc))
                await self._pause(RETRY_WAIT)
                continue
            try:
                await self._serve(self._client)
            except Exception as exc:  # a bug must not end the thread silently: say it, start over
                log.exception("fleet consumer %s: reading the stream failed; connecting again", self.durable)
                self._down(f"internal error: {type(exc).__name__}")
                await self._pause(RETRY_WAIT)
            finally:
                await self._give_back()
                client, self._client, self._js = self._client, None, None
                try:
                    await client.close()
                except Exception:  # noqa: BLE001 - a broken connection may fail to close; nothing to keep
                    pass

    async def _disconnected(self) -> None:
        if not self._stopping.is_set():
            self._down("connection lost; reconnecting")

    async def _reconnected(self) -> None:
        self._check_now = True  # ``_serve`` checks the consumer (and says up) before its next fetch

    async def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < end:
            await asyncio.sleep(0.05)

    async def _serve(self, client: Any) -> None:
        """Fetch until stopped or the connection is closed for good; errors on the way mark us down."""
        js = client.jetstream(timeout=CALL_TIMEOUT)
        subscription = None
        next_check = 0.0
        next_progress = time.monotonic() + self.ack_wait / 3
        while not self._stopping.is_set():
            if client.is_closed:
                self._down("connection closed")
                return
            try:
                now = time.monotonic()
                if subscription is None or now >= next_check or self._check_now:
                    self._check_now = False
                    await self._ensure_consumer(js)
                    if subscription is None:
                        subscription = await js.pull_subscribe_bind(self.durable, stream=self.settings.stream)
                    next_check = now + CHECK_EVERY
                    self._js = js
                    self._up()
                if now >= next_progress:
                    next_progress = now + self.ack_wait / 3
                    await self._keep_held()
                room = min(FETCH_BATCH, self.bound - len(self._held))
                if room <= 0:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    messages = await subscription.fetch(room, timeout=FETCH_WAIT)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nothing new in FETCH_WAIT
                    continue
                self._take(messages)
            except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
                self._down(jetstream.reason(exc, self.settings))
                next_check = 0.0
                await self._pause(RETRY_WAIT)

    async def _ensure_consumer(self, js: Any) -> None:
        """Read the consumer's ack floor; make the consumer when it is missing (another process may race us)."""
        stream = self.settings.stream
        try:
            info = await js.consumer_info(stream, self.durable)
        except nats.js.errors.NotFoundError:
            await jetstream.ensure_stream(js, self.settings)
            if self.floor:
                config = ConsumerConfig(durable_name=self.durable, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                        opt_start_seq=self.floor + 1, **self._common())
                log.warning("fleet consumer %s was gone: made again from stream seq %d", self.durable,
                            self.floor + 1)
            elif self.start_time is not None:
                config = ConsumerConfig(durable_name=self.durable, deliver_policy=DeliverPolicy.BY_START_TIME,
                                        opt_start_time=datetime.fromtimestamp(self.start_time, timezone.utc),
                                        **self._common())
            else:
                config = ConsumerConfig(durable_name=self.durable, deliver_policy=DeliverPolicy.NEW,
                                        **self._common())
            try:
                info = await js.add_consumer(stream, config)
            except nats.js.errors.BadRequestError:
                info = await js.consumer_info(stream, self.durable)  # made by another process meanwhile
        if info.ack_floor is not None and info.ack_floor.stream_seq:
            self.floor = max(self.floor, info.ack_floor.stream_seq)
        self._made.set()

    def _common(self) -> dict[str, Any]:
        return dict(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait, max_ack_pending=self.max_ack_pending,
                    max_deliver=-1, num_replicas=self.settings.replicas)

    def _take(self, messages: list) -> None:
        for message in messages:
            seq = message.metadata.sequence.stream
            if seq in self._held:
                # Handed to us again while we hold it (a progress report came late): keep the newer handle.
                self._held[seq] = message
                continue
            try:
                event = records.decode(seq, message.data, message.headers)
            except MalformedFrameError as exc:
                self.skipped += 1
                kind = _problem_kind(exc)
                if kind not in self._kinds_logged:
                    self._kinds_logged.add(kind)
                    log.error("fleet consumer %s: skipping messages no master wrote (%s; first: seq %d)",
                              self.durable, kind, seq)
                asyncio.ensure_future(self._settle(message, "ack"))
                continue
            self._held[seq] = message
            self.delivered += 1
            self._events.put(event)

    def _ack(self, seq: int) -> None:
        message = self._held.pop(seq, None)
        if message is not None:
            self.acked += 1
            asyncio.ensure_future(self._settle(message, "ack"))

    async def _settle(self, message: Any, how: str) -> None:
        try:
            await getattr(message, how)()
        except (nats.errors.Error, OSError) as exc:
            # Not acked: JetStream hands it out again after ack_wait; the callers repeat nothing finished.
            log.debug("fleet consumer %s: %s of seq %d not sent: %s", self.durable, how,
                      message.metadata.sequence.stream, exc)

    async def _keep_held(self) -> None:
        """Tell JetStream the held messages are still being worked on (so none goes to another process)."""
        for message in list(self._held.values()):
            try:
                await message.in_progress()
            except nats.errors.MsgAlreadyAckdError:
                pass

    async def _give_back(self) -> None:
        """Nak what is held and not done, so another process takes it now instead of after ``ack_wait``."""
        if not self._stopping.is_set():
            return  # a lost connection: keep them; the caller may still finish and ack them
        held, self._held = list(self._held.values()), {}
        for message in held:
            await self._settle(message, "nak")
        if held and self._client is not None and self._client.is_connected:
            try:
                await self._client.flush(2)
            except (nats.errors.Error, asyncio.TimeoutError):
                pass
