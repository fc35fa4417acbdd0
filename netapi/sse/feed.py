"""The API process's one subscription to the master bus, tied to CherryPy's engine.

``BusFeed`` is a ``SimplePlugin``: engine start opens the bus handle and starts the feed thread, which
follows the bus with the library's one resuming reader and turns each event, and each gap notice, into an
SSE record once for the hub; engine stop ends every stream and closes the handle. The ``/hook`` and
``/cloudevents`` publisher is ``eventbus.netapi.publisher``; a resuming stream reads what it missed itself
(``eventbus.netapi.sse.events``) on this handle's zmq context. See docs/api.md, How it scales.
"""
from __future__ import annotations

import logging
import threading
import time

import zmq
from cherrypy.process import plugins, wspbus

from eventbus.bus import control, wire
from eventbus import event
from eventbus.config import MasterConfig
from eventbus.errors import EventBusError
from eventbus.netapi.sse.hub import Hub
from eventbus.netapi.sse.stream import Record, event_record

log = logging.getLogger(__name__)

BATCH = 512
IDLE_WAIT = 0.5


class FeedPlugin(plugins.SimplePlugin):
    """A source of events for the hub, opened at engine start and read by one thread of its own; engine stop
    ends every stream, stops the thread and closes the source. Subclasses open and close the source."""

    what = "feed"

    def __init__(self, bus: wspbus.Bus, master: MasterConfig, hub: Hub) -> None:
        super().__init__(bus)
        self.master = master
        self.hub = hub
        self._thread: threading.Thread | None = None
        self._running = False

    def open(self) -> str:
        """Open the source; what it is, for the engine's log line."""
        raise NotImplementedError

    def close_source(self) -> None:
        """Close what ``open`` opened."""

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Engine start: open the source, start the feed thread."""
        where = self.open()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self.what.lower().replace(" ", "-"), daemon=True)
        self._thread.start()
        self.bus.log(f"{self.what} started on {where}")

    start.priority = 70  # type: ignore[attr-defined]  # before the HTTP server (75) takes requests

    def stop(self) -> None:
        """Engine stop: end every stream, stop the feed thread, close the source."""
        self.hub.close()
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.close_source()
        self.bus.log(f"{self.what} stopped")

    stop.priority = 10  # type: ignore[attr-defined]  # before the HTTP server waits for streams


class BusFeed(FeedPlugin):
    """Subscribe to the master bus for the whole process and feed the hub."""

    what = "Bus feed"

    def __init__(self, bus: wspbus.Bus, master: MasterConfig, hub: Hub) -> None:
        super().__init__(bus, master, hub)
        self.context: zmq.Context | None = None
        self.handle: event.BusHandle | None = None

    def open(self) -> str:
        """Connect to the master bus, from the head it is at."""
        self.handle = event.MasterEvent(self.master.sock_dir, opts=self.master, listen=True)
        self.context = self.handle.context
        if not self.handle.connected:
            log.warning("the master bus at %s is not answering yet; streams start when it does",
                        self.master.sock_dir)
        try:
            where = control.request(self.master.sock_dir, wire.VERB_PING, None, 2.0, self.context)
            self.hub.set_position(where["seq"], where["epoch"])
            if where["seq"]:
                # From the head the API saw at start; without one, from the first live event.
                self.handle.start_following(where["seq"])
        except EventBusError as exc:
            log.debug("no position from the master yet: %s", exc)
        return f"the master bus at {self.master.sock_dir}"

    def close_source(self) -> None:
        if self.handle is not None:
            self.handle.destroy()
            self.handle = None

    def _run(self) -> None:
        handle, hub = self.handle, self.hub
        assert handle is not None
        restarts = handle.inbox.restarts
        while self._running:
            batch: list[Record] = []
            try:
                self._read(handle, batch)
            except zmq.ZMQError as exc:
                if not self._running:
                    return
                log.error("bus feed: %s", exc)
            except Exception:  # every stream depends on this thread: never let it end
                log.exception("bus feed: unexpected error (the feed goes on)")
                time.sleep(0.1)
            inbox = handle.inbox
            if inbox.restarts != restarts:
                restarts = inbox.restarts
                log.info("the master bus restarted (epoch %d)", inbox.epoch)
            if batch:
                hub.publish(batch, inbox.epoch or hub.epoch)
            else:
                hub.flush()

    def _read(self, handle: event.BusHandle, batch: list[Record]) -> None:
        """Read the next events into ``batch`` (up to ``BATCH``): wait for the first, take the rest queued."""
        get = handle.get_event_record
        delay = self.hub.flush_delay()
        ev = get(wait=IDLE_WAIT if delay is None else max(delay, 0.001), auto_reconnect=True, following=True)
        while ev is not None:
            batch.append(event_record(ev.seq, ev.tag, ev.data))
            if len(batch) >= BATCH:
                return
            ev = get(no_block=True, auto_reconnect=True, following=True)
