"""The API process's one subscription to the master bus, tied to CherryPy's engine.

``BusFeed`` is a ``SimplePlugin``: engine start opens the bus handle and
starts the feed thread, engine stop ends every stream and closes the handle.
The thread follows the master bus with the library's one resuming reader
(``get_event_record(following=True)``), turns each event into an SSE record
once and appends it to the hub. Events the bus dropped for this subscriber
are fetched by that reader from the master's window and journal, so streams
see no gap; only what is gone everywhere becomes a gap record.

It also owns the process's publisher (for ``/hook``) and reads the history
of resuming streams, all on one zmq context.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Iterator

import zmq
from cherrypy.process import plugins, wspbus

from eventbus import control, event, history, wire
from eventbus.config import MasterConfig
from eventbus.errors import BusUnavailableError, EventBusError
from eventbus.inbox import Event
from netapi.hub import Hub
from netapi.stream import Record, event_record, gap_record

log = logging.getLogger(__name__)

BATCH = 512
IDLE_WAIT = 0.5


def record_of(ev: Event) -> Record:
    """The SSE record of an event or of a gap notice from the reader."""
    if ev.seq is None:
        return gap_record(ev.data.get("lost", 0), bool(ev.data.get("restarted")))
    return event_record(ev.seq, ev.tag, ev.data)


class BusFeed(plugins.SimplePlugin):
    """Subscribe to the master bus for the whole process and feed the hub."""

    def __init__(self, bus: wspbus.Bus, master: MasterConfig, hub: Hub) -> None:
        super().__init__(bus)
        self.master = master
        self.hub = hub
        self.context: zmq.Context | None = None
        self.handle: event.BusHandle | None = None
        self.publisher: event.BusHandle | None = None
        self._publish_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------

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
        except EventBusError as exc:
            log.debug("no position from the master yet: %s", exc)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="bus-feed", daemon=True)
        self._thread.start()
        self.bus.log("Bus feed started on the master bus at %s" % self.master.sock_dir)

    start.priority = 70  # type: ignore[attr-defined]  # before the HTTP server (75) takes requests

    def stop(self) -> None:
        """Engine stop: end every stream, stop the feed thread, close the handles."""
        self.hub.close()
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._publish_lock:
            if self.publisher is not None:
                self.publisher.destroy()
                self.publisher = None
        if self.handle is not None:
            self.handle.destroy()
            self.handle = None
        self.bus.log("Bus feed stopped")

    stop.priority = 10  # type: ignore[attr-defined]  # before the HTTP server waits for streams

    # -- the feed thread ----------------------------------------------------------------

    def _run(self) -> None:
        handle, hub = self.handle, self.hub
        assert handle is not None
        if hub.last_seq:
            # From the head the API saw at start; without one, from the first live event.
            handle.start_following(hub.last_seq)
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
            batch.append(record_of(ev))
            if len(batch) >= BATCH:
                return
            ev = get(no_block=True, auto_reconnect=True, following=True)

    # -- used by request threads ------------------------------------------------------------

    def history(self, after: int, until: int) -> Iterator[Record]:
        """Records of the master's events after seq ``after`` and before ``until``, from its window and
        journal, page by page; a gap record where events are gone.

        ``BusUnavailableError`` when the master does not answer or the feed is stopping.
        """
        context = self.context
        if context is None or context.closed:
            raise BusUnavailableError("the API is stopping", sock_dir=str(self.master.sock_dir))
        client = control.Client(context, self.master.sock_dir)
        try:
            for ev in history.read_history(client, after, until):
                yield record_of(ev)
        except zmq.ZMQError as exc:
            raise BusUnavailableError(f"cannot ask the master bus: {exc}", sock_dir=str(self.master.sock_dir)) from None
        except BusUnavailableError:
            raise
        except EventBusError as exc:
            raise BusUnavailableError(str(exc), sock_dir=str(self.master.sock_dir)) from None
        finally:
            client.close()

    def fire(self, data: dict, tag: str) -> bool:
        """Fire an event on the master bus from any thread; ``False`` if the master did not take it."""
        with self._publish_lock:
            if self.publisher is None:
                if self.context is None:
                    return False
                self.publisher = event.MasterEvent(self.master.sock_dir, opts=self.master, listen=False)
            return self.publisher.fire_event(data, tag, timeout=2000)

    def fire_all(self, events: list[tuple[str, dict]]) -> int:
        """Fire ``(tag, data)`` events in order under one lock (a batch's events stay together); how many
        the master took before one was not taken."""
        with self._publish_lock:
            if self.publisher is None:
                if self.context is None:
                    return 0
                self.publisher = event.MasterEvent(self.master.sock_dir, opts=self.master, listen=False)
            fire = self.publisher.fire_event
            for count, (tag, data) in enumerate(events):
                if not fire(data, tag, timeout=2000):
                    return count
            return len(events)
