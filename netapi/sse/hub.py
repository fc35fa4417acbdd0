"""The fan-out hub: one bus feed, every ``/events`` stream reads from it.

The feed thread appends formatted records to one shared ring; each stream keeps only a cursor into it,
and one that falls ``capacity`` records behind is dropped on its next read. Streams are woken at once
after a quiet spell, at most every flush interval under load (the interval grows with the number of
streams). A stream is handed finished bytes, its new records as its filter's ``View`` renders them; streams
with the same filter share the view, which is also the resume's filter step (``eventbus.netapi.sse.events``).
See docs/api.md, How it scales.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Callable, Hashable

from eventbus.netapi.auth import EventFilter
from eventbus.netapi.sse.stream import Record

FLUSH_MIN = 0.005
FLUSH_MAX = 0.1
FLUSH_PER_STREAM = 0.00004


class View:
    """One filter (perms and ``?tag=``) and the newest ring range it rendered, shared by its streams."""

    __slots__ = ("accepts", "last", "__weakref__")

    def __init__(self, accepts: EventFilter | None) -> None:
        self.accepts = accepts
        self.last: tuple[int, int, bytes] = (-1, -1, b"")

    def render(self, records: list[Record], after_seq: int = 0) -> bytes:
        """The SSE bytes of the records this filter passes (and, if given, with seq > ``after_seq``); gap
        notices always pass."""
        accepts = self.accepts
        if after_seq:
            records = [r for r in records if r.seq > after_seq or not r.seq]
        if accepts is None:
            return b"".join([r.raw for r in records])
        return b"".join([r.raw for r in records if not r.seq or accepts(r.tag, r.event_id)])


class Stream:
    """One stream's place in the hub: its cursor, its filter's view, the resume seam."""

    __slots__ = ("cursor", "view", "skip_upto")

    def __init__(self, cursor: int, view: View, skip_upto: int) -> None:
        self.cursor = cursor
        self.view = view
        # Live records up to this seq were already sent by the resume: skipped until the seam is passed.
        self.skip_upto = skip_upto


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

    def open(self, key: Hashable, accepts: EventFilter | None, skip_upto: int = 0) -> tuple[Stream, int, int]:
        """A new stream at the live end, with the seq and epoch everything after it follows; it sees what
        ``accepts`` passes (one view per ``key``) and no live record up to seq ``skip_upto``."""
        with self._lock:
            view = self._views.get(key)
            if view is None:
                view = self._views[key] = View(accepts)
            self.streams += 1
            self._pace()
            return Stream(self._head, view, skip_upto), self.last_seq, self.epoch

    def release(self, _stream: Stream) -> None:
        """Forget a stream that ended."""
        with self._lock:
            self.streams -= 1
            self._pace()

    def _pace(self) -> None:
        self.flush_interval = min(FLUSH_MAX, max(FLUSH_MIN, self.streams * FLUSH_PER_STREAM))

    def read(self, stream: Stream, timeout: float) -> bytes | None:
        """``take``, after waiting up to ``timeout`` s for new records (``b""`` after a quiet ``timeout``);
        ``None`` also when the hub is closed."""
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

    def take(self, stream: Stream) -> bytes | None:
        """The stream's new records as its view renders them (``b""``: none), now; ``None`` if it fell more
        than ``capacity`` records behind (the ring no longer holds what it has not sent: it is dropped)."""
        start, end, capacity = stream.cursor, self._head, self.capacity
        if end - start > capacity:
            return None
        stream.cursor = end
        if start == end:
            return b""
        view, skip = stream.view, stream.skip_upto
        last = view.last
        if last[0] == start and last[1] == end and not skip:
            return last[2]  # another stream with this view rendered it
        ring = self._ring
        records: list[Record] = [ring[i % capacity] for i in range(start, end)]  # type: ignore[misc]
        if self._head - start > capacity:
            return None  # copied without the lock, and the feed lapped ``start`` meanwhile
        data = view.render(records, skip)
        if not skip:
            view.last = (start, end, data)
        elif records[-1].seq > skip:
            stream.skip_upto = 0  # past the seam: from here every record is new to the client
        return data

    def lag(self, stream: Stream) -> int:
        """Records the stream has not read yet."""
        return self._head - stream.cursor

    def behind(self) -> str:
        """Why a stream ``take`` refused was dropped."""
        return f"it fell {self.capacity} events behind"
