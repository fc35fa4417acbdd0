"""The API process's one subscription to the master bus, tied to CherryPy's engine.

``BusFeed`` is a ``SimplePlugin``: engine start opens the bus handle and
starts the feed thread, engine stop ends every stream and closes the handle.
The thread turns each bus event into an SSE record once and appends it to
the hub. When the bus had to drop events for this subscriber (a seq gap),
the feed fills the hole from the daemon's replay window, so streams see no
gap; only what the window no longer holds becomes a gap record.

It also owns the process's publisher (for ``/hook``) and the replay
requests of resuming streams, all on one zmq context.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq
from cherrypy.process import plugins, wspbus

from eventbus import control, event, payload, wire
from eventbus.config import MasterConfig
from eventbus.errors import BusUnavailableError, EventBusError, InvalidEventError
from netapi.hub import Hub
from netapi.stream import Record, event_record, gap_record

log = logging.getLogger(__name__)

BATCH = 512
IDLE_WAIT = 0.5
# When the bus is quiet this often, ask the master whether events were dropped for us at the end.
CHECK_EVERY = 1.0


def records_of_frames(frames: list[Any]) -> list[Record]:
    """Records of ``[[seq, bus_frame], ...]`` from a replay answer (malformed ones skipped)."""
    records = []
    for seq, frame in frames:
        try:
            _seq, _epoch, raw_tag, raw_data = wire.split_bus_frame(frame)
            records.append(event_record(seq, raw_tag.decode("utf-8"), payload.unpack_data(raw_data)))
        except (ValueError, UnicodeDecodeError, InvalidEventError):
            log.debug("skipped a malformed replayed frame")
    return records


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
        get = handle.get_event_record
        inbox = handle.inbox
        restarts = inbox.restarts
        last_seq = hub.last_seq
        next_check = time.monotonic() + CHECK_EVERY
        while self._running:
            delay = hub.flush_delay()
            try:
                ev = get(wait=IDLE_WAIT if delay is None else max(delay, 0.001), auto_reconnect=True)
            except zmq.ZMQError as exc:
                if not self._running:
                    return
                log.error("bus feed: %s", exc)
                continue
            batch: list[Record] = []
            if ev is None and time.monotonic() >= next_check:
                # Quiet: were the last events before the quiet dropped for us? Only the master knows.
                next_check = time.monotonic() + CHECK_EVERY
                head = self._master_head()
                if head is not None and last_seq and head[1] == hub.epoch and head[0] > last_seq:
                    batch.extend(self._fill(last_seq, head[0] + 1))
                    last_seq = head[0]
            while ev is not None:
                if inbox.restarts != restarts:
                    restarts = inbox.restarts
                    log.info("the master bus restarted (epoch %d)", inbox.epoch)
                elif ev.seq <= last_seq:
                    ev = get(no_block=True, auto_reconnect=True)  # already filled from the window
                    continue
                elif last_seq and ev.seq > last_seq + 1:
                    batch.extend(self._fill(last_seq, ev.seq))
                last_seq = ev.seq
                batch.append(event_record(ev.seq, ev.tag, ev.data))
                if len(batch) >= BATCH:
                    break
                ev = get(no_block=True, auto_reconnect=True)
            if batch:
                hub.publish(batch, inbox.epoch or hub.epoch)
            else:
                hub.flush()

    def _master_head(self) -> tuple[int, int] | None:
        """(seq, epoch) of the master's newest event, or ``None`` if it does not answer."""
        try:
            where = control.request(self.master.sock_dir, wire.VERB_PING, None, 1.0, self.context)
        except EventBusError:
            return None
        return int(where["seq"]), int(where["epoch"])

    def _fill(self, last_seq: int, next_seq: int) -> list[Record]:
        """Records the bus dropped for this subscriber between two seqs, from its replay window."""
        missing = next_seq - last_seq - 1
        try:
            records = self.replay(last_seq, missing)[0]
        except BusUnavailableError as exc:
            log.warning("bus feed: cannot fill %d dropped events from the master's window: %s", missing, exc)
            records = []
        records = [r for r in records if r.seq < next_seq]
        log.info("bus feed: the bus dropped %d events for this API; %d filled from the master's window",
                 missing, len(records))
        if len(records) < missing:
            log.warning("bus feed: %d events left the master's window before they could be streamed",
                        missing - len(records))
            records.insert(0, gap_record(missing - len(records)))
        return records

    # -- used by request threads ------------------------------------------------------------

    def replay(self, after: int, limit: int) -> tuple[list[Record], int, bool]:
        """(records, lost, restarted) of the master's window after seq ``after``.

        ``BusUnavailableError`` when the master does not answer or the feed is stopping.
        """
        if limit <= 0:
            return [], 0, False
        context = self.context
        if context is None or context.closed:
            raise BusUnavailableError("the API is stopping", sock_dir=str(self.master.sock_dir))
        try:
            answer = control.request(self.master.sock_dir, wire.VERB_REPLAY, {"after": after, "limit": limit},
                                     5.0, context)
        except zmq.ZMQError as exc:
            raise BusUnavailableError(f"cannot ask the master bus: {exc}", sock_dir=str(self.master.sock_dir)) from None
        except EventBusError as exc:
            raise BusUnavailableError(str(exc), sock_dir=str(self.master.sock_dir)) from None
        return records_of_frames(answer["events"]), int(answer["lost"]), bool(answer["restarted"])

    def fire(self, data: dict, tag: str) -> bool:
        """Fire an event on the master bus from any thread; ``False`` if the master did not take it."""
        with self._publish_lock:
            if self.publisher is None:
                if self.context is None:
                    return False
                self.publisher = event.MasterEvent(self.master.sock_dir, opts=self.master, listen=False)
            return self.publisher.fire_event(data, tag, timeout=2000)
