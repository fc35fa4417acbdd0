"""``/events`` streams once they are open: resume through the one reader, then live from the hub.

The route (``netapi.app``) authenticates and sends the headers; ``serve``
writes the stream: ``retry:``, what a resuming client missed (the master's
window and journal, through ``BusFeed.history``), then the live records.
A plain-HTTP stream's socket goes to the pump, which writes every such
stream from one thread; a TLS stream is written by its request thread. Both
keep their state in one ``StreamState``.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Iterator

from eventbus.complaints import Complaints
from eventbus.errors import BusUnavailableError
from netapi import auth
from netapi.auth import Principal
from netapi.busfeed import BusFeed
from netapi.hub import Hub
from netapi.pump import Pump, Pumped
from netapi.stream import KEEPALIVE, RETRY
from netapi.streamstate import StreamState

log = logging.getLogger(__name__)

# Longest a stream thread sleeps before it checks its token's expiry and the engine state.
STREAM_TICK = 1.0
# Resumed records written per chunk.
RESUME_CHUNK = 500


class EventStreams:
    """Writes the open ``/events`` streams of one API process."""

    def __init__(self, hub: Hub, feed: BusFeed, pump: Pump | None, complaints: Complaints) -> None:
        self.hub = hub
        self.feed = feed
        self.pump = pump
        self.complaints = complaints

    def serve(self, principal: Principal, view_key: tuple, accepts: auth.EventFilter | None,
              last_seen: int | None, peer: str, sock: socket.socket | None) -> Iterator[bytes]:
        """The stream's body; ``sock`` (plain HTTP) is handed to the pump after the first chunks."""
        hub = self.hub
        stream, head, _epoch = hub.open()
        state = StreamState(stream, hub.view(view_key, accepts), principal.expire, last_seen or 0,
                            principal.user, peer)
        try:
            yield RETRY
            if last_seen is not None:
                try:
                    yield from self._resume(last_seen, head, accepts)
                except BusUnavailableError as exc:
                    # Sending live events now would skip what the client missed: end, it will retry.
                    if not hub.closed:
                        self.complaints.refuse("resume", f"ended the stream of {principal.user} from {peer}: "
                                                         f"cannot resume: {exc}")
                    return
            if sock is not None and self.pump is not None:
                # Headers and first chunks are out: the pump writes the rest, this thread just waits.
                pumped = Pumped(sock, state)
                self.pump.adopt(pumped)
                while not pumped.done.wait(STREAM_TICK) and not hub.closed:
                    pass
                log.debug("stream of %s ended: %s", principal.user, pumped.reason)
                return
            yield from self._write_here(state)
        except GeneratorExit:
            # cheroot closes us when a write failed: the client left, or stopped reading until
            # the socket timed out with its buffers full.
            pending = hub.lag(stream)
            if pending and not hub.closed:
                self.complaints.refuse("slow", f"dropped the stream of {principal.user} from {peer}: "
                                               f"the client left or stopped reading ({pending} events unsent)")
            raise
        finally:
            hub.release(stream)

    def _write_here(self, state: StreamState) -> Iterator[bytes]:
        """The live records from this thread (TLS), with keepalives, until expiry or a drop."""
        hub = self.hub
        monotonic = time.monotonic
        while True:
            left = state.expire - time.time()
            if left <= 0:
                log.debug("stream of %s ended: token expired", state.user)
                return
            data = state.render(hub, hub.read(state.stream, min(STREAM_TICK, left, state.quiet_left(monotonic()))))
            if data is None:
                if not hub.closed:
                    self.complaints.refuse("slow", f"dropped the stream of {state.user} from {state.peer}: "
                                                   f"{state.behind(hub)}")
                return
            if data:
                yield data
                state.wrote()
            elif state.keepalive_due(monotonic()):
                yield KEEPALIVE
                state.wrote()

    def _resume(self, last_seen: int, head: int, accepts: auth.EventFilter | None) -> Iterator[bytes]:
        """What a client that last saw ``last_seen`` missed up to ``head``, from the master's window and
        journal, in chunks; a gap record first where events are gone."""
        if last_seen >= head:
            return
        chunk: list[bytes] = []
        for record in self.feed.history(last_seen, head + 1):
            if record.seq == 0 or accepts is None or accepts(record.tag, record.event_id):
                chunk.append(record.raw)
                if len(chunk) >= RESUME_CHUNK:
                    yield b"".join(chunk)
                    chunk = []
        if chunk:
            yield b"".join(chunk)
