"""``/events`` in cluster mode: the fleet stream, not the local bus, feeds the hub; SSE ids are stream seqs.

``FleetFeed`` is the ``BusFeed`` of an API whose master has ``cluster`` (SPEC 12): a ``SimplePlugin``
whose thread follows the fleet stream with one ``eventbus.cluster.follow.FleetReader`` for the whole
process, live from the stream's end at first contact, and hands each fleet event to the hub as a record
whose seq is its stream seq. It keeps the newest events in a ``FleetWindow``; a stream resuming from a
``Last-Event-ID`` gets what it missed from that window, or, when it is older, from a short-lived reader
of the stream (``resume``), then live from the hub with no gap and no duplicate at the seam. Because
every master's API reads the same stream, an id from one master resumes on any other. See docs/api.md.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Iterator

from cherrypy.process import wspbus

from eventbus.bus.inbox import GAP_TAG
from eventbus.cluster.follow import FleetReader, Gap, Position
from eventbus.cluster.records import FleetEvent
from eventbus.cluster.settings import ClusterSettings
from eventbus.config import MasterConfig
from eventbus.errors import BusUnavailableError
from eventbus.netapi.sse.feed import BATCH, IDLE_WAIT, FeedPlugin
from eventbus.netapi.sse.hub import Hub, Stream
from eventbus.netapi.sse.stream import KEEPALIVE, Record, event_record
from eventbus.netapi.sse.streamstate import StreamState

log = logging.getLogger(__name__)

RESUME_CHUNK = 500
# Longest a resuming stream waits on one read before it checks expiry, keepalives and the engine.
STREAM_TICK = 1.0


def fleet_record(item: FleetEvent | Gap) -> Record:
    """The SSE record of a fleet event (``id:`` its stream seq) or of a gap (no ``id:``)."""
    if isinstance(item, Gap):
        return event_record(None, GAP_TAG, {"lost": item.lost})
    return event_record(item.stream_seq, item.tag, item.data)


class FleetWindow:
    """The newest fleet records the feed handed the hub, and from which stream seq on it holds them all."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: deque[Record] = deque()
        # Every fleet event with a stream seq past ``_base`` the feed read is held (or was unreadable).
        self._base: int | None = None
        self._lock = threading.Lock()

    def start_after(self, seq: int) -> None:
        """Hold what comes after stream seq ``seq`` (the feed's start, or where it went on after a gap)."""
        with self._lock:
            self._records.clear()
            self._base = seq

    def add(self, records: list[Record]) -> None:
        """Append records of fleet events (gap notices are not kept: a resume finds its own)."""
        with self._lock:
            kept = self._records
            kept.extend(r for r in records if r.seq)
            while len(kept) > self.capacity:
                self._base = kept.popleft().seq

    def since(self, last_seen: int, head: int) -> list[Record] | None:
        """The records with stream seq in (``last_seen``, ``head``], or ``None`` when the window does not
        reach back to ``last_seen``."""
        with self._lock:
            if self._base is None or last_seen < self._base:
                return None
            found: list[Record] = []
            for record in reversed(self._records):
                if record.seq <= last_seen:
                    break
                if record.seq <= head:
                    found.append(record)
            found.reverse()
            return found


class FleetFeed(FeedPlugin):
    """Follow the fleet stream for the whole process and feed the hub (the cluster-mode ``BusFeed``)."""

    what = "Fleet feed"

    def __init__(self, bus: wspbus.Bus, master: MasterConfig, hub: Hub, window: int) -> None:
        super().__init__(bus, master, hub)
        assert master.cluster is not None
        self.settings: ClusterSettings = master.cluster
        self.window = FleetWindow(window)
        self.positioned = threading.Event()
        self.reader: FleetReader | None = None

    @property
    def name(self) -> str:
        return f"eventbus-api {self.master.id}"

    def open(self) -> str:
        """Follow the fleet stream (its end at first contact)."""
        self.reader = FleetReader(self.settings, None, name=self.name, buffer=4 * BATCH).start()
        return f"stream {self.settings.stream}"

    def close_source(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _run(self) -> None:
        reader, hub, window = self.reader, self.hub, self.window
        assert reader is not None
        while self._running:
            batch: list[Record] = []
            delay = hub.flush_delay()
            item = reader.get(IDLE_WAIT if delay is None else max(delay, 0.001))
            while item is not None:
                if isinstance(item, Position):
                    self._publish(batch)
                    batch = []
                    window.start_after(item.last_seq)
                    hub.set_position(item.last_seq, 1)
                    self.positioned.set()
                else:
                    if isinstance(item, Gap):
                        self._publish(batch)
                        batch = []
                        window.start_after(item.resumed_at - 1)
                    batch.append(fleet_record(item))
                    if len(batch) >= BATCH:
                        break
                item = reader.get(0)
            if batch:
                self._publish(batch)
            else:
                hub.flush()

    def _publish(self, batch: list[Record]) -> None:
        if batch:
            self.window.add(batch)
            self.hub.publish(batch, 1)

    # -- a resuming stream's side ----------------------------------------------------------

    def wait_position(self, state: StreamState) -> Iterator[bytes]:
        """Keepalives until the feed knows where the stream is (the cluster answered once); ends early when
        the token expires or the API stops (the caller checks ``positioned``)."""
        while not self.positioned.wait(min(STREAM_TICK, state.quiet_left(time.monotonic()))):
            if self.hub.closed or state.expired():
                return
            if state.keepalive_due(time.monotonic()):
                yield KEEPALIVE
                state.wrote()

    def resume(self, stream: Stream, state: StreamState, last_seen: int, head: int) -> Iterator[bytes]:
        """What a client that last saw stream seq ``last_seen`` missed up to ``head``: from the window, else
        from the stream (a gap record first where it no longer holds them), through the stream's view.

        While the cluster does not answer the stream stays open with keepalives; ``BusUnavailableError``
        when the API stops meanwhile.
        """
        if last_seen >= head:
            return
        held = self.window.since(last_seen, head)
        if held is not None:
            for start in range(0, len(held), RESUME_CHUNK):
                if data := stream.view.render(held[start:start + RESUME_CHUNK]):
                    yield data
                    state.wrote()
            return
        with FleetReader(self.settings, last_seen + 1, name=f"{self.name} resume", quiet=True) as reader:
            chunk: list[Record] = []
            while True:
                if self.hub.closed:
                    raise BusUnavailableError("the API is stopping", sock_dir=str(self.master.sock_dir))
                if state.expired():
                    return
                # Once the reader consumed ``head``, everything up to it is queued: an empty queue is the end.
                done = reader.read_upto >= head
                item = reader.get(0 if chunk or done else min(STREAM_TICK, state.quiet_left(time.monotonic())))
                if item is not None:
                    if isinstance(item, Gap) or (isinstance(item, FleetEvent) and item.stream_seq <= head):
                        chunk.append(fleet_record(item))
                    if len(chunk) < RESUME_CHUNK:
                        continue
                if chunk and (data := stream.view.render(chunk)):
                    yield data
                    state.wrote()
                chunk = []
                if item is None:
                    if done:
                        return
                    if state.keepalive_due(time.monotonic()):
                        yield KEEPALIVE
                        state.wrote()
