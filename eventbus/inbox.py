"""What a listening handle has received, without any socket.

The inbox reads the bus's frames, counts events the bus had to drop for this
listener (sequence gaps), notices daemon restarts (new epoch), and keeps, in
order, events that match a ``subscribe``d tag but not the current
``get_event`` call, so a later matching call returns them (Salt's
``pending_tags`` semantics). The sync and asyncio handles are thin adapters
around it.
"""
from __future__ import annotations

import collections
import logging
import struct
from typing import NamedTuple

from eventbus import match, payload, wire
from eventbus.errors import InvalidEventError

log = logging.getLogger(__name__)

_header = wire.HEADER.unpack_from
_HEADER_SIZE = wire.HEADER_SIZE


class Event(NamedTuple):
    """One event as a listener gets it; ``seq`` is its number on the bus."""

    tag: str
    data: dict
    seq: int

    def full(self) -> dict:
        """Salt's ``full=True`` shape."""
        return {"tag": self.tag, "data": self.data}


class Inbox:
    """Sequence accounting, subscriptions and kept events of one listener."""

    def __init__(self, default_match_type: str = "startswith", keep_limit: int = 10000) -> None:
        self.default_match_type = default_match_type
        self.keep_limit = keep_limit
        self.subscriptions: dict[tuple[str, str], match.Matcher] = {}
        self.kept: collections.deque[Event] = collections.deque()
        self.lost = 0
        self.restarts = 0
        self.epoch: int | None = None
        self.last_seq = 0
        self.synced: set[bytes] = set()

    def matcher(self, tag: str | None, match_type: str | None) -> match.Matcher:
        return match.matcher(tag or "", match_type or self.default_match_type)

    def subscribe(self, tag: str, match_type: str | None = None) -> None:
        key = (tag or "", match_type or self.default_match_type)
        self.subscriptions[key] = match.matcher(*key)

    def unsubscribe(self, tag: str, match_type: str | None = None) -> None:
        key = (tag or "", match_type or self.default_match_type)
        self.subscriptions.pop(key, None)
        if self.kept:
            remaining = tuple(self.subscriptions.values())
            self.kept = collections.deque(e for e in self.kept if any(m(e.tag) for m in remaining))

    def take_kept(self, want: match.Matcher) -> Event | None:
        """The oldest kept event that ``want`` matches, removed from the inbox."""
        for index, event in enumerate(self.kept):
            if want(event.tag):
                del self.kept[index]
                return event
        return None

    def receive(self, frame: bytes, want: match.Matcher) -> Event | None:
        """Account one frame from the bus; the event if ``want`` matches it, else ``None``."""
        try:
            seq, epoch = _header(frame)
            cut = frame.index(b"\x00", _HEADER_SIZE)
            tag = frame[_HEADER_SIZE:cut].decode("utf-8")
        except (ValueError, UnicodeDecodeError, struct.error):
            log.debug("ignored a malformed frame from the bus")
            return None
        if epoch != self.epoch:
            if seq == 0:
                self.synced.add(frame[_HEADER_SIZE:])
                return None
            if self.epoch is not None:
                self.restarts += 1
            self.epoch = epoch
        elif seq > self.last_seq + 1:
            self.lost += seq - self.last_seq - 1
        self.last_seq = seq
        if want(tag):
            return self._event(tag, frame, cut, seq)
        for keep in self.subscriptions.values():
            if keep(tag):
                event = self._event(tag, frame, cut, seq)
                if event is not None:
                    if len(self.kept) >= self.keep_limit:
                        self.kept.popleft()
                        self.lost += 1
                    self.kept.append(event)
                break
        return None

    @staticmethod
    def _event(tag: str, frame: bytes, cut: int, seq: int) -> Event | None:
        try:
            return Event(tag, payload.unpack_data(memoryview(frame)[cut + 1:]), seq)
        except InvalidEventError as exc:
            log.debug("ignored event %r from the bus: %s", tag, exc)
            return None
