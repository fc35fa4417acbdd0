"""What a listening handle has received, and what it must still fetch: the one resuming reader's core.

No sockets here. The inbox reads the bus's frames in order and decides, per
frame, whether to hand it out, skip it (a duplicate of what was already
handed out) or first fetch what is missing before it. Events go missing when
the daemon had to drop them for a listener that fell behind (a sequence gap),
while a daemon restarted (a new epoch), or because a reader asked to start
in the past (``follow(since)``). Missing events are fetched from the daemon's
replay verb, which serves its in-memory window and then its journal, in
pages (``fill_request`` / ``accept_page``); fetched frames go to ``backlog``
and pass through ``receive`` like live ones, so the order, the matching and
the de-duplication are the same for both. ``lost`` counts only events that
no longer exist anywhere (purged from the journal, or never kept).

It also keeps, in order, events that match a ``subscribe``d tag but not the
current ``get_event`` call, so a later matching call returns them (Salt's
``pending_tags`` semantics).

The reading loop is here, once: ``step`` hands out an event or says what
I/O to do (``READ`` a live frame, ``ASK`` the daemon a ``question``); the
handles and history reading do it and hand back the result.
"""
from __future__ import annotations

import collections
import logging
import struct
from typing import Any, NamedTuple

import msgpack

from eventbus.bus import match, payload, wire
from eventbus.errors import EventBusError, InvalidEventError

log = logging.getLogger(__name__)

_header = wire.HEADER.unpack_from
_HEADER_SIZE = wire.HEADER_SIZE
_unpackb = msgpack.unpackb

GAP_TAG = "eventbus/stream/gap"
# Events asked for per replay request: big enough to stream fast, small enough for one reply.
PAGE = 2000
# A listener quiet this long after its last event asks the daemon's head (were events dropped just
# before?); while nothing turns out missing the asks come further apart, up to HEAD_CHECK_MAX.
HEAD_CHECK_EVERY = 0.5
HEAD_CHECK_MAX = 8.0
# A replay page the daemon does not answer within this is given up (get_event) or asked again (follow).
REPLAY_TIMEOUT = 5.0
RETRY_PAUSE = 0.5
# A head check is advisory: a daemon that does not answer it quickly is asked again later.
HEAD_TIMEOUT = 1.0

# What ``Inbox.step`` asks a reader to do when it has no event to hand out yet.
READ = "read"  # read one live frame without waiting: to the next ``step``, or ``quiet`` if there was none
ASK = "ask"    # send the daemon ``question()``: its reply, or the EventBusError it failed with, to ``answer``


class Event(NamedTuple):
    """One event as a listener gets it; ``seq`` is its number on the bus (``None`` for a gap notice)."""

    tag: str
    data: dict
    seq: int | None

    def full(self) -> dict:
        """Salt's ``full=True`` shape."""
        return {"tag": self.tag, "data": self.data}

    def record(self) -> dict:
        """``follow``'s shape: ``{"seq", "tag", "data"}``."""
        return {"seq": self.seq, "tag": self.tag, "data": self.data}


_new_tuple = tuple.__new__

# ``receive``'s answer when events are missing before the frame: fetch them first (``fill_request``).
NEED_FILL: Any = Event("", {}, -1)


class Inbox:
    """Position, gap filling, de-duplication, subscriptions and kept events of one listener."""

    def __init__(self, default_match_type: str = "startswith", keep_limit: int = 10000,
                 catch_up: bool = True, node: str = "local") -> None:
        self.node = node  # whose bus, for log lines
        self.default_match_type = default_match_type
        self.keep_limit = keep_limit
        self.catch_up = catch_up
        self.subscriptions: dict[tuple[str, str], match.Matcher] = {}
        self.kept: collections.deque[Event] = collections.deque()
        # Frames fetched by a fill (and the live frame that revealed the gap), handed out before live ones.
        self.backlog: collections.deque[bytes] = collections.deque()
        self.lost = 0
        self.restarts = 0
        self.epoch: int | None = None
        self.last_seq = 0
        self.synced: set[bytes] = set()
        # Lost events not yet reported by a gap notice (``follow``), and whether a restart hid a count.
        self.unreported = 0
        self.unreported_restart = False
        self._fill: tuple[int, int | None] | None = None  # (after, until) still to fetch
        self._pending: bytes | None = None  # the live frame that revealed the gap being filled
        self._next_head_check = 0.0
        self._checked_seq = -1  # last_seq at the previous look at a quiet socket
        self._head_interval = HEAD_CHECK_EVERY
        self._filled_upto = 0  # gaps before this seq were fetched already: what is still missing is lost
        self._head_now = False  # the next ASK is a head check

    # -- subscriptions --------------------------------------------------------------------

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

    # -- position ------------------------------------------------------------------------

    def note_presync(self, frame: bytes) -> None:
        """A frame that came before the handle was proven live: only sync answers count."""
        token = wire.sync_token(frame)
        if token is not None:
            self.synced.add(token)

    def start_from(self, since: int, until: int | None = None) -> None:
        """Hand out every retained event after seq ``since`` (0: all) and before ``until``, then live ones."""
        self.last_seq = since
        self.epoch = None
        self.backlog.clear()
        self._filled_upto = 0
        self._pending = None
        self._fill = (since, until)

    def take_gap(self) -> Event | None:
        """The gap notice owed before the next event (``follow``), if events were lost since the last one."""
        if not (self.unreported or self.unreported_restart):
            return None
        data: dict[str, Any] = {"lost": self.unreported}
        if self.unreported_restart and not self.unreported:
            data["restarted"] = True
        self.unreported, self.unreported_restart = 0, False
        return Event(GAP_TAG, data, None)

    # -- the reading loop ------------------------------------------------------------------

    def step(self, want: match.Matcher, following: bool = False, frame: bytes | None = None) -> Event | str:
        """The next event ``want`` matches, or what to do first: ``READ`` or ``ASK``.

        ``frame`` is the live frame the last ``READ`` got. Fetched frames go
        before live ones; ``following`` also hands out gap notices.
        """
        backlog = self.backlog
        while True:
            if frame is None:
                if following and (self.unreported or self.unreported_restart):
                    return self.take_gap()  # type: ignore[return-value]
                if not backlog:
                    return ASK if self._fill is not None or self._head_now else READ
                frame = backlog.popleft()
            event = self.receive(frame, want)
            if event is not None and event is not NEED_FILL:
                return event
            frame = None

    def quiet(self, now: float, deadline: float | None) -> float | None:
        """``READ`` found no frame: seconds to wait for one (0: ``ASK`` the head first), ``None`` past ``deadline``.

        The daemon's head is asked once the bus has been quiet for a while
        after an event (were events dropped just before?), then less often.
        """
        remaining = 3600.0 if deadline is None else deadline - now
        if remaining <= 0:
            return None
        if not self.last_seq:
            return remaining  # a reader that never got an event never asks
        if self.last_seq != self._checked_seq:
            self._checked_seq, self._head_interval = self.last_seq, HEAD_CHECK_EVERY
            self._next_head_check = now + HEAD_CHECK_EVERY
        elif now >= self._next_head_check:
            self._head_now = True
            return 0.0
        return min(remaining, max(self._next_head_check - now, 0.001))

    def question(self) -> tuple[bytes, Any, float]:
        """The control request ``ASK`` stands for: (verb, args, timeout)."""
        if self._head_now:
            return wire.VERB_PING, None, HEAD_TIMEOUT
        return wire.VERB_REPLAY, self.fill_request(), REPLAY_TIMEOUT

    def answer(self, reply: Any, now: float, retry: bool = False) -> float:
        """The reply to ``question()`` (or the ``EventBusError`` it failed with); seconds to pause before reading on.

        A replay page that failed is asked again after a pause when
        ``retry`` (a follower), else what was missing counts as lost.
        """
        failed = isinstance(reply, EventBusError)
        if self._head_now:
            self._head_now = False
            if failed:
                log.debug("no head from the %s bus: %s", self.node, reply)
            self.check_head(None if failed else int(reply["seq"]), now)
        elif not failed:
            self.accept_page(reply)
        elif retry:
            log.warning("cannot fetch events missed on the %s bus yet, retrying: %s", self.node, reply)
            return RETRY_PAUSE
        else:
            log.warning("cannot fetch events missed on the %s bus (they count as lost): %s", self.node, reply)
            self.give_up_fill()
        return 0.0

    # -- frames in -----------------------------------------------------------------------

    def receive(self, frame: bytes, want: match.Matcher) -> Event | None:
        """Account one frame; the event if ``want`` matches it, ``NEED_FILL`` if events are missing first."""
        try:
            # wire.split_bus_frame inline (a call less per event): the header, then the tag up to its NUL.
            seq, epoch = _header(frame)
            cut = frame.index(0, _HEADER_SIZE)
            tag = frame[_HEADER_SIZE:cut].decode("utf-8")
        except (struct.error, ValueError):  # too short, no NUL, or a tag that is not UTF-8
            log.debug("ignored a malformed frame from the bus")
            return None
        last = self.last_seq
        if seq != last + 1 or epoch != self.epoch:
            if seq == 0:
                self.note_presync(frame)
                return None
            if seq <= last:
                return None  # handed out already (a fill overlapped the live stream)
            if last and seq > last + 1:
                if self.catch_up and seq > self._filled_upto:
                    self._pending = frame
                    self._start_fill(last, seq)
                    return NEED_FILL
                # Within one run seqs are contiguous; a new run's events start at its epoch + 1.
                missing = seq - last - 1 if epoch == self.epoch else max(0, seq - epoch - 1)
                self.lost += missing
                self.unreported += missing
            if self.epoch is not None and epoch != self.epoch:
                self.restarts += 1
            self.epoch = epoch
        self.last_seq = seq
        if want(tag):
            try:
                # The common case inline (a copy of a small frame's data is cheaper than a memoryview);
                # anything unusual goes through _event for its error.
                data = _unpackb(frame[cut + 1:], raw=False, strict_map_key=False)
                if type(data) is dict:
                    return _new_tuple(Event, (tag, data, seq))  # Event(...) without its Python __new__
            except Exception:  # msgpack raises many unrelated types on garbage
                pass
            return self._event(tag, frame[cut + 1:], seq)
        for keep in self.subscriptions.values():
            if keep(tag):
                event = self._event(tag, frame[cut + 1:], seq)
                if event is not None:
                    if len(self.kept) >= self.keep_limit:
                        self.kept.popleft()
                        self.lost += 1
                    self.kept.append(event)
                break
        return None

    @staticmethod
    def _event(tag: str, raw_data: bytes, seq: int) -> Event | None:
        try:
            return Event(tag, payload.unpack_data(raw_data), seq)
        except InvalidEventError as exc:
            log.debug("ignored event %r from the bus: %s", tag, exc)
            return None

    # -- filling gaps --------------------------------------------------------------------
    #
    # A handle asks for pages only when the backlog is empty, so a long fill streams page by
    # page; the live frame that revealed the gap is handed out after the last page.

    def _start_fill(self, after: int, until: int) -> None:
        log.info("events missing on the %s bus after seq %d: fetching them from its window and journal",
                 self.node, after)
        self._fill = (after, until)

    def fill_request(self) -> dict | None:
        """The replay request to send next, or ``None`` when nothing is missing."""
        if self._fill is None:
            return None
        after, until = self._fill
        limit = PAGE if until is None else max(1, min(PAGE, until - after - 1))
        return {"after": after, "limit": limit}

    def accept_page(self, answer: dict) -> None:
        """Take one replay answer: its frames join the backlog, ``lost`` counts what is gone for good.

        The page's frames pass through ``receive`` later, so holes inside it
        (a seq jump within one daemon run) are counted there; what the daemon
        counted before the first frame is counted here and not again.
        """
        assert self._fill is not None
        after, until = self._fill
        head, events = int(answer["seq"]), answer["events"]
        if until is not None:
            events = [e for e in events if e[0] < until]
        lost, restarted = int(answer["lost"]), bool(answer.get("restarted"))
        if until is not None and not events:
            lost = min(lost, until - after - 1)  # the daemon counted up to its oldest, maybe past ``until``
        if lost or restarted:
            self.lost += lost
            self.unreported += lost
            self.unreported_restart = self.unreported_restart or restarted
            if events:
                self.last_seq, self.epoch = events[0][0] - 1, _header(events[0][1])[1]
            elif until is not None and self._pending is not None:
                self.last_seq, self.epoch = until - 1, _header(self._pending)[1]
        if events:
            last_fetched = events[-1][0]
            self._filled_upto = max(self._filled_upto, last_fetched)
            self.backlog.extend(frame for _seq, frame in events)
            done = last_fetched >= (head if until is None else until - 1)
        else:
            done = True
        if not done:
            self._fill = (last_fetched, until)
            return
        self._fill = None
        if until is not None:
            self._filled_upto = max(self._filled_upto, until)
            if self._pending is not None:
                self.backlog.append(self._pending)
                self._pending = None
        elif not events and head > self.last_seq:
            # Caught up and nothing was fetched: live frames from the head on are the new ones.
            self.last_seq, self.epoch = head, int(answer["epoch"])

    def check_head(self, seq: int | None, now: float) -> None:
        """The daemon's newest seq (``None``: it did not answer): fetch what was dropped just before, and
        schedule the next ask (sooner again when something was missing)."""
        if seq is not None and self._fill is None and seq > self.last_seq > 0:
            self._start_fill(self.last_seq, seq + 1)
        self._head_interval = (HEAD_CHECK_EVERY if self._fill is not None
                               else min(self._head_interval * 2, HEAD_CHECK_MAX))
        self._next_head_check = now + self._head_interval

    @property
    def filling(self) -> bool:
        """Whether a fill has pages left to fetch."""
        return self._fill is not None

    def give_up_fill(self) -> None:
        """The daemon could not be asked: what was missing counts as lost and live reading goes on."""
        if self._fill is not None and self._fill[1] is not None:
            self._filled_upto = max(self._filled_upto, self._fill[1])
        self._fill = None
        if self._pending is not None:
            self.backlog.append(self._pending)
            self._pending = None
