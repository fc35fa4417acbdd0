"""Which minions are present, from their heartbeats alone. No sockets, no clock of its own.

A minion is present from the first heartbeat (or any message) of an
accepted minion until it has been silent for ``timeout`` seconds. The
master's link sets ``timeout`` to 1.5 heartbeat intervals and checks a few
times per interval, so a frozen or unplugged minion leaves the set within
two intervals while a live one whose heartbeat runs a little late stays.
"""
from __future__ import annotations

# Bytes of a presence event besides its ids (tag, keys, ``_stamp``, part numbers), and per id besides its
# characters (msgpack's string header): what ``chunks`` counts to keep each event under max_event_size.
EVENT_OVERHEAD = 256
PER_ID = 5


class Presence:
    """Last-heard times of accepted minions, and the changes since the last report."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last_heard: dict[str, float] = {}
        self._reported: set[str] = set()

    def heard(self, minion_id: str, now: float) -> bool:
        """Note a message from ``minion_id``; ``True`` when it was not present before."""
        new = minion_id not in self.last_heard
        self.last_heard[minion_id] = now
        return new

    def forget(self, minion_id: str) -> None:
        """Take ``minion_id`` out at once (its key was rejected or deleted)."""
        self.last_heard.pop(minion_id, None)

    def expire(self, now: float) -> list[str]:
        """Take out the minions silent for longer than ``timeout``; return them."""
        limit = now - self.timeout
        gone = [minion_id for minion_id, heard in self.last_heard.items() if heard < limit]
        for minion_id in gone:
            del self.last_heard[minion_id]
        return gone

    def present(self) -> list[str]:
        return sorted(self.last_heard)

    def __contains__(self, minion_id: str) -> bool:
        return minion_id in self.last_heard

    def report(self) -> tuple[list[str], list[str], list[str]]:
        """(present, new, lost) since the previous report: what the presence events carry."""
        now = set(self.last_heard)
        new = sorted(now - self._reported)
        lost = sorted(self._reported - now)
        self._reported = now
        return sorted(now), new, lost


def chunks(ids: list[str], max_event_size: int) -> list[list[str]]:
    """``ids`` cut, in order, into as few lists as keep each presence event under ``max_event_size``.

    A fleet's present set is one event while it fits (10,000 ids of 20
    characters take about 220 kB of the default 1 MB); past that, several.
    """
    budget = max_event_size - EVENT_OVERHEAD
    parts: list[list[str]] = [[]]
    size = 0
    for minion_id in ids:
        cost = len(minion_id.encode()) + PER_ID
        if size + cost > budget and parts[-1]:
            parts.append([])
            size = 0
        parts[-1].append(minion_id)
        size += cost
    return parts
