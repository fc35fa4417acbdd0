"""Bus handles for asyncio code: awaitable ``get_event`` / ``fire_event`` and ``async for``.

::

    async with eventbus.aio.get_event("master", opts=opts) as bus:
        await bus.fire_event({"message": "It works!"}, "myco/event/success")
        async with bus.subscribe("myco/") as sub:
            async for event in sub:          # {"tag": ..., "data": ...}
                ...

The same inbox as the blocking handle does the work (sequence gaps, kept
events); this module only waits on sockets the asyncio way. The listener is
connected and proven live on ``async with`` (or ``await bus.connect()``).
zmq reconnects to a restarted daemon by itself; the handle carries on.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, AsyncIterator, Mapping

import zmq
import zmq.asyncio

from eventbus import config
from eventbus.bus import control, payload, wire
from eventbus.errors import EventBusError, InvalidArgumentError, InvalidEventError
from eventbus.bus.inbox import ASK, READ, Event, Inbox
from eventbus.bus.sockets import CONNECT_TIMEOUT, hand_over, open_listener, open_publisher, poll_ms

log = logging.getLogger(__name__)

_recv_now = zmq.Socket.recv
_send_now = zmq.Socket.send
_NOBLOCK = int(zmq.NOBLOCK)


class AsyncBusHandle:
    """An asyncio handle on one daemon's local bus."""

    def __init__(self, node: str, sock_dir: str | os.PathLike | None = None,
                 opts: Mapping[str, Any] | config.BaseConfig | None = None, listen: bool = True) -> None:
        if node not in ("master", "minion"):
            raise InvalidArgumentError(f"unknown node {node!r}; expected 'master' or 'minion'",
                                       argument="node", value=node)
        settings = config.typed(opts, config.MasterConfig if node == "master" else config.MinionConfig)
        self.node = node
        self.listen = listen
        self.endpoints = wire.endpoints(sock_dir or settings.sock_dir)  # type: ignore[attr-defined]
        self.max_event_size = settings.max_event_size
        self._pack = payload.packer()  # this handle's own (one event loop's thread)
        self.inbox = Inbox(settings.event_match_type, node=node)
        self.context = zmq.asyncio.Context()
        self.sub: zmq.asyncio.Socket | None = None
        self.push: zmq.asyncio.Socket | None = None
        self._sync_token = b""
        self._send_timeout = -2
        # Replay pages and head checks are asked on a blocking connection in a worker thread: the same
        # client as the blocking handle's, kept off the event loop.
        self._control = control.Client(zmq.Context.instance(), self.endpoints.sock_dir)

    @property
    def connected(self) -> bool:
        """Whether the daemon has confirmed this handle's subscriptions."""
        return self._sync_token in self.inbox.synced

    @property
    def lost(self) -> int:
        """Events this handle missed because it fell behind (counted from sequence gaps)."""
        return self.inbox.lost

    async def connect(self, timeout: float = CONNECT_TIMEOUT) -> bool:
        """Connect the listener; ``True`` once the daemon confirms it is live."""
        if self.sub is None:
            self.sub, self._sync_token = open_listener(self.context, self.endpoints)  # type: ignore[assignment]
        deadline = time.monotonic() + timeout
        while not self.connected:
            try:
                self.inbox.note_presync(_recv_now(self.sub, _NOBLOCK))
                continue
            except zmq.Again:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.sub.poll(poll_ms(remaining), zmq.POLLIN)
        self.sub.setsockopt(zmq.UNSUBSCRIBE, self._sync_token)
        return True

    async def _next(self, want: Any, deadline: float | None, following: bool = False) -> Event | None:
        """The next event ``want`` matches, or ``None`` at ``deadline``: the I/O of the inbox's reading loop."""
        if self.sub is None:
            await self.connect()
        sub, inbox, frame = self.sub, self.inbox, None
        step = inbox.step
        while True:
            todo = step(want, following, frame)
            frame = None
            if todo is READ:
                try:
                    frame = _recv_now(sub, _NOBLOCK)
                    continue
                except zmq.Again:
                    pass
                wait = inbox.quiet(time.monotonic(), deadline)
                if wait is None:
                    return None
                if wait:
                    await sub.poll(poll_ms(wait), zmq.POLLIN)  # type: ignore[union-attr]
            elif todo is ASK:
                try:
                    reply = await asyncio.get_running_loop().run_in_executor(
                        None, self._control.request, *inbox.question())
                except EventBusError as exc:
                    reply = exc
                await asyncio.sleep(inbox.answer(reply, time.monotonic(), following))  # a pause before asking again
            else:
                return todo

    async def follow(self, since: int, tag: str = "", match_type: str | None = None) -> AsyncIterator[dict]:
        """Every retained event after seq ``since`` (0: all), then live ones: ``{"seq", "tag", "data"}``.

        As the blocking handle's ``follow``: window, journal, then live, no
        gap and no duplicate at the seams; a gap notice where events are gone.
        """
        if since < 0:
            raise InvalidEventError(f"follow: since must be a seq >= 0, not {since}")
        self.inbox.start_from(since)
        want = self.inbox.matcher(tag, match_type)
        while True:
            event = await self._next(want, None, following=True)
            if event is not None:
                yield event.record()

    async def get_event(self, wait: float = 5, tag: str = "", full: bool = False,
                        match_type: str | None = None, no_block: bool = False) -> dict | None:
        """Like the blocking ``get_event``: data (or ``{"tag", "data"}``), ``None`` after ``wait`` s."""
        want = self.inbox.matcher(tag, match_type)
        event = self.inbox.take_kept(want) if self.inbox.kept else None
        if event is None:
            now = time.monotonic()
            event = await self._next(want, now if no_block else None if wait == 0 else now + wait)
            if event is None:
                return None
        return event.full() if full else event.data

    async def iter_events(self, tag: str = "", full: bool = False,
                          match_type: str | None = None) -> AsyncIterator[dict]:
        """Every matching event, forever."""
        while True:
            data = await self.get_event(wait=0, tag=tag, full=full, match_type=match_type)
            if data is not None:
                yield data

    def subscribe(self, tag: str = "", match_type: str | None = None) -> "AsyncSubscription":
        """Keep events matching ``tag``; also an async iterator and context manager of them."""
        self.inbox.subscribe(tag, match_type)
        return AsyncSubscription(self, tag, match_type)

    def unsubscribe(self, tag: str = "", match_type: str | None = None) -> None:
        self.inbox.unsubscribe(tag, match_type)

    async def fire_event(self, data: dict, tag: str, timeout: int = 1000) -> bool:
        """Hand an event to the daemon: ``True`` if handed, ``False`` if none answered in ``timeout`` ms."""
        frame = payload.pack_frame(tag, data, self.max_event_size, self._pack)
        if self.push is None:
            self.push = open_publisher(self.context, self.endpoints, timeout)  # type: ignore[assignment]
            self._send_timeout = timeout
        try:
            _send_now(self.push, frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
        if timeout != self._send_timeout:
            self.push.setsockopt(zmq.SNDTIMEO, timeout)  # type: ignore[union-attr]
            self._send_timeout = timeout
        try:
            # The awaited send gives up with Again after SNDTIMEO.
            await self.push.send(frame)  # type: ignore[union-attr]
        except zmq.Again:
            return False
        return True

    async def aclose(self) -> None:
        """Close the handle; events already handed over are still delivered."""
        if self.context.closed:
            return
        self._control.close()
        if self.sub is not None:
            self.sub.close(0)
        push = self.push
        # The hand-over waits for the daemon to read what the publisher holds, and term() for the
        # sockets to close: both off the loop.
        await asyncio.get_running_loop().run_in_executor(None, self._close_blocking, push)

    def _close_blocking(self, push: zmq.Socket | None) -> None:
        if push is not None:
            blocking = zmq.Context.shadow(self.context.underlying)
            hand_over(push, blocking, self.endpoints.sock_dir)
            push.close()
        self.context.term()

    async def __aenter__(self) -> "AsyncBusHandle":
        if self.listen:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncSubscription:
    """A subscribed tag: ``async for`` over its full events; ``async with`` unsubscribes at exit."""

    def __init__(self, handle: AsyncBusHandle, tag: str, match_type: str | None) -> None:
        self.handle = handle
        self.tag = tag
        self.match_type = match_type

    def __aiter__(self) -> AsyncIterator[dict]:
        return self.handle.iter_events(tag=self.tag, full=True, match_type=self.match_type)

    async def get(self, wait: float = 5) -> dict | None:
        """The next full event of this subscription, or ``None`` after ``wait`` seconds."""
        return await self.handle.get_event(wait=wait, tag=self.tag, full=True, match_type=self.match_type)

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.handle.unsubscribe(self.tag, self.match_type)


def get_event(node: str, sock_dir: str | os.PathLike | None = None,
              opts: Mapping[str, Any] | config.BaseConfig | None = None, listen: bool = True) -> AsyncBusHandle:
    """An asyncio handle on the ``"master"`` or ``"minion"`` bus; use it with ``async with``."""
    return AsyncBusHandle(node, sock_dir, opts, listen)
