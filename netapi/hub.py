"""The fan-out hub: one bus feed, every ``/events`` stream reads from it.

The feed thread appends formatted records to one shared ring; each stream
only keeps a cursor into it. So an event costs one record whatever the
number of streams, and a stream's queue is bounded by the ring: a stream
that falls ``capacity`` records behind (its client stopped reading) is
dropped on its next read, and it never slows the feed or other streams.

Wake-ups are the expensive part with a thousand streams (each is a thread,
see ``netapi.server``), so the hub wakes streams at once when the bus has
been quiet, and at most every flush interval when it is busy; under load
each wake-up then carries a batch of records in one write. The interval
grows with the number of streams (20 ms for a few, 100 ms for a thousand):
latency is traded for CPU only when there are many streams to wake.

Streams with the same filter share a ``View``, which renders a range of
records once: a thousand streams woken for the same range filter and join
the records once, not a thousand times.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Callable, Hashable

from netapi.auth import EventFilter
from netapi.stream import Record

FLUSH_MIN = 0.02
FLUSH_MAX = 0.1
FLUSH_PER_STREAM = 0.00004


class Stream:
    """One stream's place in the hub."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor


class Hub:
    """A ring of the newest ``capacity`` records with a cursor per stream."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.flush_interval = FLUSH_MIN
        self._views: weakref.WeakValueDictionary[Hashable, View] = weakref.WeakValueDictionary()
        self._ring: list[Record | None] = [None] * capacity
        self._head = 0
        self._lock = threading.Lock()
        # One locked lock per sleeping stream, released to wake it. Unlike a Condition, a woken
        # stream does not re-take a lock all the others also want: a wake-up of a thousand
        # streams does not become a thousand-way contention.
        self._parked: set[threading.Lock] = set()
        self._wake_listeners: list[Callable[[], None]] = []
        self._last_wake = 0.0
        self._dirty = False
        self.last_seq = 0
        self.epoch = 0
        self.streams = 0
        self.closed = False

    # -- the feed's side ----------------------------------------------------------------

    def publish(self, records: list[Record], epoch: int) -> None:
        """Append records (oldest first) from the bus run started at ``epoch``; wake streams if due."""
        ring, capacity = self._ring, self.capacity
        with self._lock:
            head = self._head
            for record in records:
                ring[head % capacity] = record
                head += 1
                if record.seq:
                    self.last_seq = record.seq
            self._head = head
            self.epoch = epoch
            self._dirty = True
            self._wake_if_due(time.monotonic())

    def set_position(self, seq: int, epoch: int) -> None:
        """Note where the bus is before any event arrived (from the daemon's ``ping``)."""
        with self._lock:
            if not self.last_seq:
                self.last_seq, self.epoch = seq, epoch

    def flush_delay(self) -> float | None:
        """Seconds until pending records must be woken for; ``None`` when nothing is pending."""
        if not self._dirty:
            return None
        return max(0.0, self._last_wake + self.flush_interval - time.monotonic())

    def flush(self) -> None:
        """Wake streams for pending records if the interval has passed."""
        if self._dirty:
            with self._lock:
                self._wake_if_due(time.monotonic())

    def _wake_if_due(self, now: float) -> None:
        if self._dirty and now - self._last_wake >= self.flush_interval:
            self._dirty = False
            self._last_wake = now
            self._wake_all()

    def _wake_all(self) -> None:
        parked, self._parked = self._parked, set()
        for waiter in parked:
            waiter.release()
        for listener in self._wake_listeners:
            listener()

    def on_wake(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (quick, from the feed thread) whenever streams are woken."""
        self._wake_listeners.append(listener)

    def close(self) -> None:
        """End every stream (engine stop)."""
        with self._lock:
            self.closed = True
            self._wake_all()

    # -- a stream's side ------------------------------------------------------------------

    def open(self) -> tuple[Stream, int, int]:
        """A new stream at the live end, with the seq and epoch everything after it follows."""
        with self._lock:
            self.streams += 1
            self._pace()
            return Stream(self._head), self.last_seq, self.epoch

    def release(self, _stream: Stream) -> None:
        """Forget a stream that ended."""
        with self._lock:
            self.streams -= 1
            self._pace()

    def _pace(self) -> None:
        self.flush_interval = min(FLUSH_MAX, max(FLUSH_MIN, self.streams * FLUSH_PER_STREAM))

    def read(self, stream: Stream, timeout: float) -> tuple[int, int] | None:
        """The range of new records after the stream's cursor, waiting up to ``timeout`` s for some.

        An empty range after a quiet ``timeout``; ``None`` when the stream fell
        more than ``capacity`` records behind (it is dropped) or the hub is closed.
        """
        if stream.cursor == self._head and not self.closed:
            waiter = threading.Lock()
            waiter.acquire()
            with self._lock:
                parked = stream.cursor == self._head and not self.closed
                if parked:
                    self._parked.add(waiter)
            if parked and not waiter.acquire(True, timeout):
                with self._lock:
                    self._parked.discard(waiter)
        if self.closed:
            return None
        return self.take(stream)

    def take(self, stream: Stream) -> tuple[int, int] | None:
        """The range of records after the stream's cursor, now; ``None`` if it fell too far behind."""
        head, cursor = self._head, stream.cursor
        if head - cursor > self.capacity:
            return None
        stream.cursor = head
        return cursor, head

    def records(self, start: int, end: int) -> list[Record] | None:
        """Records ``[start, end)``; ``None`` if the ring has already overwritten some of them."""
        ring, capacity = self._ring, self.capacity
        records = [ring[i % capacity] for i in range(start, end)]
        # Copied without the lock: valid only if the feed did not lap ``start`` meanwhile.
        return records if self._head - start <= capacity else None  # type: ignore[return-value]

    def lag(self, stream: Stream) -> int:
        """Records the stream has not read yet."""
        return self._head - stream.cursor

    def view(self, key: Hashable, accepts: EventFilter | None) -> "View":
        """The shared view of the filter ``key`` (made on first use, gone when no stream holds it)."""
        with self._lock:
            view = self._views.get(key)
            if view is None:
                view = self._views[key] = View(accepts)
            return view


class View:
    """One filter's rendering of record ranges, shared by every stream with that filter."""

    __slots__ = ("accepts", "_last", "__weakref__")

    def __init__(self, accepts: EventFilter | None) -> None:
        self.accepts = accepts
        self._last: tuple[int, int, bytes] = (-1, -1, b"")

    def render(self, hub: Hub, start: int, end: int, after_seq: int = 0) -> bytes | None:
        """The SSE bytes of records ``[start, end)`` this filter passes (and, if given, seq > ``after_seq``).

        ``None`` if the records were overwritten before they could be read.
        """
        last = self._last
        if last[0] == start and last[1] == end and not after_seq:
            return last[2]
        records = hub.records(start, end)
        if records is None:
            return None
        accepts = self.accepts
        if after_seq:
            records = [r for r in records if r.seq > after_seq or not r.seq]
        if accepts is None:
            data = b"".join([r.raw for r in records])
        else:
            data = b"".join([r.raw for r in records if not r.seq or accepts(r.tag, r.event_id)])
        if not after_seq:
            self._last = (start, end, data)
        return data
