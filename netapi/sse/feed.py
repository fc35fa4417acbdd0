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


class BusFeed(plugins.SimplePlugin):
    """Subscribe to the master bus for the whole process and feed the hub."""

    def __init__(self, bus: wspbus.Bus, master: MasterConfig, hub: Hub) -> None:
        super().__init__(bus)
        self.master = master
        self.hub = hub
        self.context: zmq.Context | None = None
        self.handle: event.BusHandle | None = None
        self._thread: threading.Thread | None = None
        self._running = False

    def start(self) -> None:
        """Engine start: connect to the master bus and start the feed thread."""
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
        self._running = True
        self._thread = threading.Thread(target=self._run, name="bus-feed", daemon=True)
        self._thread.start()
        self.bus.log("Bus feed started on the master bus at %s" % self.master.sock_dir)

    start.priority = 70  # type: ignore[attr-defined]  # before the HTTP server (75) takes requests

    def stop(self) -> None:
        """Engine stop: end every stream, stop the feed thread, close the handle."""
        self.hub.close()
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.handle is not None:
            self.handle.destroy()
            self.handle = None
        self.bus.log("Bus feed stopped")

    stop.priority = 10  # type: ignore[attr-defined]  # before the HTTP server waits for streams

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
