"""Which numbers of one fleet identity prefix the stream already holds, as merged ranges (no I/O).

The fleet identity of an event is ``<who>:<number>`` (``eventbus.cluster.records``). JetStream drops a
repeated ``Nats-Msg-Id`` only within its duplicate window; past it, masters keep, per ``who``, the ranges of
numbers they have written, in a JetStream key-value bucket (``daemon/cluster/exporter.py``). Ranges, not a
high mark: a failover re-send can store numbers above ones a dead master still has to export.
"""
from __future__ import annotations

import bisect

import msgpack

# A long-lived minion's ranges stay one; a master's seqs restart their count at each restart. Past this many
# the oldest ranges are forgotten: they are far older than any export still to come.
MAX_RANGES = 256


class Ranges:
    """Sorted, disjoint, non-adjacent ``[low, high]`` ranges of numbers."""

    __slots__ = ("lows", "highs")

    def __init__(self, pairs: list[tuple[int, int]] | None = None) -> None:
        self.lows: list[int] = []
        self.highs: list[int] = []
        for low, high in pairs or ():
            self.add(low, high)

    def __contains__(self, number: int) -> bool:
        at = bisect.bisect_right(self.lows, number) - 1
        return at >= 0 and number <= self.highs[at]

    def __len__(self) -> int:
        return len(self.lows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranges) and self.lows == other.lows and self.highs == other.highs

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.lows, self.highs))

    def add(self, low: int, high: int | None = None) -> bool:
        """Add ``[low, high]`` (one number when ``high`` is ``None``); whether anything was new."""
        high = low if high is None else high
        if high < low:
            return False
        lows, highs = self.lows, self.highs
        # Every range that overlaps or touches [low, high] merges into one.
        first = bisect.bisect_left(highs, low - 1)
        last = bisect.bisect_right(lows, high + 1)
        if first < last:
            if lows[first] <= low and high <= highs[first] and last - first == 1:
                return False
            low = min(low, lows[first])
            high = max(high, highs[last - 1])
        lows[first:last] = [low]
        highs[first:last] = [high]
        if len(lows) > MAX_RANGES:
            del lows[0], highs[0]
        return True

    def merge(self, other: "Ranges") -> bool:
        """Add every range of ``other``; whether anything was new."""
        changed = False
        for low, high in zip(other.lows, other.highs):
            changed = self.add(low, high) or changed
        return changed

    def pack(self) -> bytes:
        return msgpack.packb([[low, high] for low, high in zip(self.lows, self.highs)])

    @classmethod
    def unpack(cls, raw: bytes) -> "Ranges":
        """The ranges ``pack`` wrote; empty for anything else (a value no master wrote is not trusted)."""
        try:
            pairs = msgpack.unpackb(raw)
        except (ValueError, msgpack.UnpackException):
            return cls()
        if not isinstance(pairs, list):
            return cls()
        ranges = cls()
        for pair in pairs:
            if (isinstance(pair, list) and len(pair) == 2 and all(type(n) is int and n >= 0 for n in pair)):
                ranges.add(pair[0], pair[1])
        return ranges
