"""The replay window: the bus's newest events, for readers that come back late."""
from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass


@dataclass
class Replay:
    """What a reader that last saw ``after`` missed: the kept events and how many are gone."""

    events: list[tuple[int, bytes, bytes]]
    lost: int
    restarted: bool


class Window:
    """Keep the newest ``size`` events as (seq, tag, data) of one daemon run starting at ``epoch``."""

    def __init__(self, size: int, epoch: int) -> None:
        self.size = size
        self.epoch = epoch
        self.events: collections.deque[tuple[int, bytes, bytes]] = collections.deque(maxlen=size)
        self.add = self.events.append

    def since(self, after: int, limit: int | None = None) -> Replay:
        """Events with seq greater than ``after``, oldest first, at most ``limit`` of them.

        ``restarted`` is true when ``after`` belongs to an earlier daemon run,
        whose unsent tail no one can count; ``lost`` then counts only this
        run's events that left the window.
        """
        restarted = after < self.epoch
        first_wanted = max(after + 1, self.epoch + 1)
        oldest = self.events[0][0] if self.events else None
        if oldest is None:
            return Replay([], 0, restarted)
        lost = max(0, oldest - first_wanted)
        start = max(0, first_wanted - oldest)
        stop = len(self.events) if limit is None else min(len(self.events), start + limit)
        events = list(itertools.islice(self.events, start, stop))
        return Replay(events, lost, restarted)
