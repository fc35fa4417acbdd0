"""Bus handles with Salt's listener API, blocking form (``eventbus.aio`` is the asyncio one).

::

    bus = eventbus.event.get_event("master", sock_dir=opts["sock_dir"], opts=opts)
    data = bus.get_event(wait=10, tag="salt/auth")
    bus.fire_event({"message": "It works!"}, "myco/event/success")

A handle is for one thread. Its listening socket is connected (and proven
live, see ``eventbus.bus.wire``) when the handle is made, so nothing fired after
that is missed.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterator, Mapping

import zmq
from zmq.backend import zmq_poll as _zmq_poll
from zmq.utils.monitor import recv_monitor_message

from eventbus import config
from eventbus.bus import control, payload, relay, wire
from eventbus.errors import BusDisconnectedError, EventBusError, InvalidArgumentError, InvalidEventError
from eventbus.bus.inbox import ASK, NEED_FILL, READ, Event, Inbox
from eventbus.bus.match import Matcher
from eventbus.bus.sockets import CONNECT_TIMEOUT, hand_over, open_listener, open_publisher, poll_ms, send_bytes

log = logging.getLogger(__name__)

_NOTHING = object()
# A wait for the listening socket that returned within this found a frame queued: the bus is busy.
BUSY_WAIT = 0.0001
# zmq's constants are enum members: ``&`` on one runs Python code, and passing one costs a conversion.
_POLLIN, _NOBLOCK = int(zmq.POLLIN), int(zmq.NOBLOCK)


class BusHandle:
    """A handle on one daemon's local bus: listen with ``get_event``, publish with ``fire_event``."""

    config_class: type[config.BusConfig] = config.MasterConfig

    def __init__(self, node: str, sock_dir: str | os.PathLike | None = None,
                 opts: Mapping[str, Any] | config.BaseConfig | None = None, listen: bool = True) -> None:
        settings = config.typed(opts, self.config_class)
        self.node = node
        self.opts = settings
        self.endpoints = wire.endpoints(sock_dir or settings.sock_dir)  # type: ignore[attr-defined]
        self.max_event_size = settings.max_event_size
        self._pack = payload.packer()  # this handle's own (a handle is for one thread)
        self.inbox = Inbox(settings.event_match_type, node=node)
        self.context = zmq.Context()
        self.sub: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._sub_ready: list[tuple[zmq.Socket, int]] = []  # [(sub, POLLIN)]: a look at the listener
        self._watched: list[tuple[zmq.Socket, int]] = []    # the listener and its monitor: a wait
        self._sync_token = b""
        self._send_timeout = -2
        self._control = control.Client(self.context, self.endpoints.sock_dir)  # replay pages, head checks
        self._quiet = False  # the last look at the listener found nothing queued
        # The last get_event call's tag and match type (none yet: a value no caller passes), and their matcher.
        self._want_tag: Any = _NOTHING
        self._want_type: Any = _NOTHING
        self._want: Any = None
        self.disconnected = False
        if listen:
            self.connect_pub()

    # -- connection -----------------------------------------------------------------

    def connect_pub(self, timeout: float | None = None) -> bool:
        """Connect the listening socket; ``True`` once the daemon has confirmed it is live."""
        if self.sub is None:
            self.sub, self._sync_token = open_listener(self.context, self.endpoints)
            self._monitor = self.sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            self._sub_ready = [(self.sub, _POLLIN)]
            self._watched = [(self.sub, _POLLIN), (self._monitor, _POLLIN)]
        if timeout is None:
            if not os.path.exists(self.endpoints.files[1]):
                return False
            timeout = CONNECT_TIMEOUT
        return self._await_sync(timeout)

    @property
    def connected(self) -> bool:
        """Whether the daemon has confirmed this handle's subscriptions."""
        return self._sync_token in self.inbox.synced

    def _await_sync(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected:
            try:
                frame = self.sub.recv(_NOBLOCK)  # type: ignore[union-attr]
            except zmq.Again:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._watch_link(remaining, True)
                continue
            # Anything before the sync answer was fired before this handle was live.
            self.inbox.note_presync(frame)
        self.sub.setsockopt(zmq.UNSUBSCRIBE, self._sync_token)  # type: ignore[union-attr]
        return True

    def connect_pull(self, timeout: int = 1000) -> None:
        """Connect the publishing socket (done on the first ``fire_event``)."""
        if self.push is None:
            self.push = open_publisher(self.context, self.endpoints, timeout)
            self._send_timeout = timeout

    def _watch_link(self, timeout: float, auto_reconnect: bool) -> None:
        """Block until the listener may have data, noting (dis)connections on the way."""
        monitor = self._monitor
        assert monitor is not None
        ready = _zmq_poll(self._watched, poll_ms(timeout))
        if ready and ready[-1][0] is monitor:  # zmq_poll keeps the order of _watched
            while monitor.poll(0):
                event = recv_monitor_message(monitor)["event"]
                self.disconnected = event == zmq.EVENT_DISCONNECTED
                if self.disconnected:
                    log.debug("lost the %s bus at %s", self.node, self.endpoints.sock_dir)
        if self.disconnected and not auto_reconnect:
            raise BusDisconnectedError(f"lost the connection to the {self.node} bus at "
                                       f"{self.endpoints.sock_dir}", sock_dir=str(self.endpoints.sock_dir))

    # -- listening ------------------------------------------------------------------

    def _next(self, want: Any, deadline: float | None, auto_reconnect: bool, following: bool) -> Event | None:
        """The next event ``want`` matches, or ``None`` at ``deadline``: the I/O of the inbox's reading loop."""
        if self.sub is None:
            self.connect_pub(timeout=0)
        inbox = self.inbox
        step, receive = inbox.step, inbox.receive
        recv, look = self.sub.recv, self._sub_ready  # type: ignore[union-attr]
        waited = False
        while True:
            todo = step(want, following)
            if todo is READ:
                # On a quiet bus a recv that finds nothing raises (costly) zmq.Again on every call; so while
                # quiet, wait first (a wait returns at once when a frame is queued), and recv after it.
                tried = waited or not self._quiet
                waited = False
                if tried:
                    try:
                        frame = recv(_NOBLOCK)
                    except zmq.Again:
                        pass
                    else:
                        # What step(want, following, frame) would do first, a call less per event: a frame
                        # read right after READ goes before anything fetched later.
                        event = receive(frame, want)
                        if event is not None and event is not NEED_FILL:
                            return event
                        continue
                self._quiet = True
                now = time.monotonic()
                wait = inbox.quiet(now, deadline)
                if wait is None:
                    if tried or not _zmq_poll(look, 0):  # past the deadline: what is queued is still read
                        return None
                    waited = True
                elif wait:
                    self._watch_link(wait, auto_reconnect)
                    waited = True
                    if time.monotonic() - now < BUSY_WAIT:
                        self._quiet = False  # a frame was queued already: the bus is busy
            elif todo is ASK:
                try:
                    reply = self._control.request(*inbox.question())
                except EventBusError as exc:
                    reply = exc
                time.sleep(inbox.answer(reply, time.monotonic(), following))  # a pause before asking again
            else:
                return todo

    def start_following(self, since: int) -> None:
        """Make the next ``get_event_record(following=True)`` calls read from after seq ``since``."""
        if since < 0:
            raise InvalidEventError(f"follow: since must be a seq >= 0, not {since}")
        self.inbox.start_from(since)

    def follow(self, since: int, tag: str = "", match_type: str | None = None) -> Iterator[dict]:
        """Every retained event after seq ``since`` (0: all), then live ones, forever: ``{"seq", "tag", "data"}``.

        Read from the daemon's window and journal, then live, with no gap and
        no duplicate at the seams; a daemon restart is survived. Where events
        are gone, one ``{"seq": None, "tag": "eventbus/stream/gap", "data":
        {"lost": N}}`` comes first, whatever ``tag``. The handle is the
        follower's from then on.
        """
        self.start_following(since)
        while True:
            event = self.get_event_record(0, tag, match_type, auto_reconnect=True, following=True)
            if event is not None:
                yield event.record()

    def get_event(self, wait: float = 5, tag: str = "", full: bool = False,
                  match_type: str | None = None, no_block: bool = False,
                  auto_reconnect: bool = False) -> dict | None:
        """The next matching event's data (``{"tag", "data"}`` when ``full``), or ``None`` after ``wait`` s.

        ``wait=0`` blocks until an event comes; ``no_block`` returns at once.
        """
        # get_event_record's steps inline: a Python call less per event on the listener's path.
        if tag == self._want_tag and match_type == self._want_type:
            want = self._want  # a loop of get_event calls asks for the same tag every time
        else:
            want = self._matcher(tag, match_type)
        event = self.inbox.take_kept(want) if self.inbox.kept else None
        if event is None:
            now = time.monotonic()
            event = self._next(want, now if no_block else None if wait == 0 else now + wait, auto_reconnect, False)
            if event is None:
                return None
        return event.full() if full else event.data

    def get_event_record(self, wait: float = 5, tag: str = "", match_type: str | None = None,
                         no_block: bool = False, auto_reconnect: bool = False,
                         following: bool = False, match: Matcher | None = None) -> Event | None:
        """Like ``get_event`` but the ``Event(tag, data, seq)`` record, ``seq`` being its bus number.

        For readers that resume by sequence number (the REST API's ``id:``).
        ``following`` (after ``start_following``) also returns gap notices
        (``seq`` ``None``, tag ``eventbus/stream/gap``) and asks the daemon's
        head when the bus is quiet, so nothing dropped just before is missed.
        ``match``, a ``tag -> bool`` test, replaces ``tag`` and ``match_type``
        (a reactor's compiled rules): an event it refuses is counted but never
        unpacked, and ``inbox.last_seq`` says how far the reader has read.
        """
        if match is not None:
            want = match
        elif tag == self._want_tag and match_type == self._want_type:
            want = self._want  # a loop of get_event calls asks for the same tag every time
        else:
            want = self._matcher(tag, match_type)
        event = self.inbox.take_kept(want) if self.inbox.kept else None
        if event is None:
            now = time.monotonic()
            event = self._next(want, now if no_block else None if wait == 0 else now + wait, auto_reconnect,
                               following)
        return event

    def _matcher(self, tag: str, match_type: str | None) -> Matcher:
        """The matcher of ``tag`` and ``match_type``, kept for the next call that asks for the same."""
        want = self.inbox.matcher(tag, match_type)
        self._want_tag, self._want_type, self._want = tag, match_type, want
        return want

    def iter_events(self, tag: str = "", full: bool = False, match_type: str | None = None,
                    auto_reconnect: bool = False) -> Iterator[dict]:
        """Every matching event, forever."""
        while True:
            data = self.get_event(wait=0, tag=tag, full=full, match_type=match_type,
                                  auto_reconnect=auto_reconnect)
            if data is not None:
                yield data

    def subscribe(self, tag: str = "", match_type: str | None = None) -> "Subscription":
        """Keep events matching ``tag`` for later ``get_event`` calls; also an iterator of them."""
        self.inbox.subscribe(tag, match_type)
        return Subscription(self, tag, match_type)

    def unsubscribe(self, tag: str = "", match_type: str | None = None) -> None:
        """Stop keeping events for ``tag``; kept ones no subscription wants are dropped."""
        self.inbox.unsubscribe(tag, match_type)

    @property
    def lost(self) -> int:
        """Events this handle missed because it fell behind (counted from sequence gaps)."""
        return self.inbox.lost

    # -- publishing -----------------------------------------------------------------

    def fire_event(self, data: dict, tag: str, timeout: int = 1000) -> bool:
        """Hand an event to the daemon: ``True`` if handed, ``False`` if none answered in ``timeout`` ms."""
        frame = payload.pack_frame(tag, data, self.max_event_size, self._pack)
        if self.push is None:
            self.connect_pull(timeout)
            if self.sub is not None and not self.connected:
                # Our own listener must see what we fire, so wait until it is live.
                self._await_sync(timeout / 1000)
        if timeout != self._send_timeout:
            self.push.setsockopt(zmq.SNDTIMEO, timeout)  # type: ignore[union-attr]
            self._send_timeout = timeout
        try:
            send_bytes(self.push, frame)
        except zmq.Again:
            return False
        return True

    # -- lifetime -------------------------------------------------------------------

    def destroy(self) -> None:
        """Close the handle; events already handed over are still delivered."""
        if self.context.closed:
            return
        self._control.close()
        if self._monitor is not None:
            self.sub.disable_monitor()  # type: ignore[union-attr]
            self._monitor.close(0)
        if self.sub is not None:
            self.sub.close(0)
        if self.push is not None:
            hand_over(self.push, self.context, self.endpoints.sock_dir)
            self.push.close()
        self.context.term()

    def __enter__(self) -> "BusHandle":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()


class Subscription:
    """A ``subscribe``d tag as an iterator of full events and a context manager that unsubscribes."""

    def __init__(self, handle: BusHandle, tag: str, match_type: str | None) -> None:
        self.handle = handle
        self.tag = tag
        self.match_type = match_type

    def __iter__(self) -> Iterator[dict]:
        return self.handle.iter_events(tag=self.tag, full=True, match_type=self.match_type)

    def get(self, wait: float = 5) -> dict | None:
        """The next full event of this subscription, or ``None`` after ``wait`` seconds."""
        return self.handle.get_event(wait=wait, tag=self.tag, full=True, match_type=self.match_type)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.handle.unsubscribe(self.tag, self.match_type)


class MasterEvent(BusHandle):
    """A handle on the master's bus."""

    config_class = config.MasterConfig

    def __init__(self, sock_dir: str | os.PathLike | None = None,
                 opts: Mapping[str, Any] | config.BaseConfig | None = None, listen: bool = True) -> None:
        super().__init__("master", sock_dir, opts, listen)


class MinionEvent(BusHandle):
    """A handle on a minion's bus."""

    config_class = config.MinionConfig

    def __init__(self, opts: Mapping[str, Any] | config.BaseConfig | None = None, listen: bool = True,
                 sock_dir: str | os.PathLike | None = None) -> None:
        super().__init__("minion", sock_dir, opts, listen)
        self.relay_push: zmq.Socket | None = None
        self._relay_timeout = -2

    def fire_master(self, data: dict, tag: str, timeout: int = 1000) -> bool:
        """Relay an event to the master through the minion daemon (spooled while the master is away).

        ``True`` when handed to the minion daemon, ``False`` when none answered in ``timeout`` ms.
        """
        raw_tag, raw_data = payload.pack_event(tag, data, self.max_event_size, add_stamp=False)
        reason = relay.refused_tag(tag, getattr(self.opts, "id", ""))
        if reason is not None:
            raise InvalidEventError(f"cannot relay to the master: {reason}", tag=tag)
        if self.relay_push is None:
            self.relay_push = open_publisher(self.context, self.endpoints, timeout,
                                             relay.relay_endpoint(self.endpoints.sock_dir))
            self._relay_timeout = timeout
        if timeout != self._relay_timeout:
            self.relay_push.setsockopt(zmq.SNDTIMEO, timeout)
            self._relay_timeout = timeout
        try:
            self.relay_push.send(wire.publish_frame(raw_tag, raw_data))
        except zmq.Again:
            return False
        return True

    def destroy(self) -> None:
        if self.relay_push is not None and not self.context.closed:
            hand_over(self.relay_push, self.context, self.endpoints.sock_dir)  # spooled before we go
            self.relay_push.close()
            self.relay_push = None
        super().destroy()


def get_event(node: str, sock_dir: str | os.PathLike | None = None, transport: str = "zeromq",
              opts: Mapping[str, Any] | config.BaseConfig | None = None, listen: bool = True) -> BusHandle:
    """A handle on the ``"master"`` or ``"minion"`` bus (Salt's ``salt.utils.event.get_event``)."""
    if transport != "zeromq":
        raise InvalidArgumentError(f"unknown transport {transport!r}; only 'zeromq' is supported",
                                   argument="transport", value=transport)
    if node == "master":
        return MasterEvent(sock_dir, opts=opts, listen=listen)
    if node == "minion":
        return MinionEvent(opts, listen=listen, sock_dir=sock_dir)
    raise InvalidArgumentError(f"unknown node {node!r}; expected 'master' or 'minion'", argument="node", value=node)
