"""The replay window: the bus's newest events, for readers that come back late."""
from __future__ import annotations

import collections
import itertools
import operator
from dataclasses import dataclass

_frame_of = operator.itemgetter(1)


@dataclass
class Replay:
    """What a reader that last saw ``after`` missed: the kept events and how many are gone."""

    events: list[tuple[int, bytes]]
    lost: int
    restarted: bool


class Window:
    """The newest (seq, frame) pairs of one daemon run, at most ``size`` of them and ``max_bytes`` in all."""

    def __init__(self, size: int, epoch: int, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.epoch = epoch
        self.events: collections.deque[tuple[int, bytes]] = collections.deque()
        self.bytes = 0

    def add(self, entry: tuple[int, bytes]) -> None:
        """Keep ``entry``, forgetting the oldest ones beyond either bound."""
        events = self.events
        events.append(entry)
        self.bytes += len(entry[1])
        while len(events) > self.size or self.bytes > self.max_bytes:
            self.bytes -= len(events.popleft()[1])

    def extend(self, entries: list[tuple[int, bytes]]) -> None:
        """Keep a batch of entries (seq ascending): ``add`` for each, with the bookkeeping done in C loops."""
        events = self.events
        if len(entries) == 1:  # a quiet bus's batch: ``add`` inline (map() and sum() would cost more than they save)
            entry = entries[0]
            events.append(entry)
            self.bytes += len(entry[1])
            while len(events) > self.size or self.bytes > self.max_bytes:
                self.bytes -= len(events.popleft()[1])
            return
        events.extend(entries)
        self.bytes += sum(map(len, map(_frame_of, entries)))
        over = len(events) - self.size
        if over > 0:
            popleft = events.popleft
            self.bytes -= sum(map(len, map(_frame_of, [popleft() for _ in range(over)])))
        while self.bytes > self.max_bytes:
            self.bytes -= len(events.popleft()[1])

    def since(self, after: int, limit: int | None = None) -> Replay:
        """Events with seq greater than ``after``, oldest first, at most ``limit`` of them.

        ``restarted`` is true when ``after`` belongs to an earlier daemon run,
        whose unsent tail no one can count; ``lost`` then counts only this
        run's events that left the window.
        """
        restarted = after < self.epoch
        first_wanted = max(after + 1, self.epoch + 1)
        if not self.events:
            return Replay([], 0, restarted)
        oldest = self.events[0][0]
        lost = max(0, oldest - first_wanted)
        start = max(0, first_wanted - oldest)
        stop = len(self.events) if limit is None else min(len(self.events), start + limit)
        return Replay(list(itertools.islice(self.events, start, stop)), lost, restarted)
