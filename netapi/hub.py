"""The fan-out hub: one bus feed, every ``/events`` stream reads from it.

The feed thread appends formatted records to one shared ring; each stream
only keeps a cursor into it. So an event costs one record whatever the
number of streams, and a stream's queue is bounded by the ring: a stream
that falls ``capacity`` records behind (its client stopped reading) is
dropped on its next read, and it never slows the feed or other streams.

Wake-ups are the expensive part with a thousand streams (each is a thread,
see ``netapi.server``), so the hub wakes streams at once when the bus has
been quiet, and at most every ``flush_interval`` seconds when it is busy;
under load each wake-up then carries a batch of records in one write.
"""
from __future__ import annotations

import threading
import time

from netapi.stream import Record


class Stream:
    """One stream's place in the hub."""

    __slots__ = ("cursor",)

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor


class Hub:
    """A ring of the newest ``capacity`` records with a cursor per stream."""

    def __init__(self, capacity: int, flush_interval: float = 0.02) -> None:
        self.capacity = capacity
        self.flush_interval = flush_interval
        self._ring: list[Record | None] = [None] * capacity
        self._head = 0
        self._cond = threading.Condition()
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
        with self._cond:
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
        with self._cond:
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
            with self._cond:
                self._wake_if_due(time.monotonic())

    def _wake_if_due(self, now: float) -> None:
        if self._dirty and now - self._last_wake >= self.flush_interval:
            self._dirty = False
            self._last_wake = now
            self._cond.notify_all()

    def close(self) -> None:
        """End every stream (engine stop)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # -- a stream's side ------------------------------------------------------------------

    def open(self) -> tuple[Stream, int, int]:
        """A new stream at the live end, with the seq and epoch everything after it follows."""
        with self._cond:
            self.streams += 1
            return Stream(self._head), self.last_seq, self.epoch

    def release(self, _stream: Stream) -> None:
        """Forget a stream that ended."""
        with self._cond:
            self.streams -= 1

    def read(self, stream: Stream, timeout: float) -> list[Record] | None:
        """Records after the stream's cursor, waiting up to ``timeout`` s for some.

        ``[]`` after a quiet ``timeout``; ``None`` when the stream fell more than
        ``capacity`` records behind (it is dropped) or the hub is closed.
        """
        with self._cond:
            if stream.cursor == self._head and not self.closed:
                self._cond.wait(timeout)
            if self.closed:
                return None
            head, cursor = self._head, stream.cursor
            if head - cursor > self.capacity:
                return None
            stream.cursor = head
            if head - cursor == 1:
                return [self._ring[cursor % self.capacity]]  # type: ignore[list-item]
            ring, capacity = self._ring, self.capacity
            return [ring[i % capacity] for i in range(cursor, head)]  # type: ignore[misc]

    def lag(self, stream: Stream) -> int:
        """Records the stream has not read yet."""
        return self._head - stream.cursor
