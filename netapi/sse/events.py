"""``/events`` streams once they are open: resume through the one reader, then live from the hub.

The route (``eventbus.netapi.app``) authenticates and sends the headers; ``serve`` writes ``retry:``, what a
resuming client missed (``eventbus.bus.history``), then the live records, both through the stream's hub
view (in cluster mode the fleet feed's window or the fleet stream: ``eventbus.netapi.sse.fleet``). A
plain-HTTP stream's socket goes to the pump; a TLS stream is written by its request thread; both
keep their state in one ``StreamState``.
"""
from __future__ import annotations

import itertools
import logging
import socket
import time
from typing import Iterator

import zmq

from eventbus.bus import control, history
from eventbus.refusallog import Complaints
from eventbus.errors import BusUnavailableError, EventBusError
from eventbus.netapi import auth
from eventbus.netapi.auth import Principal
from eventbus.netapi.sse.feed import BusFeed
from eventbus.netapi.sse.fleet import FleetFeed
from eventbus.netapi.sse.hub import Hub, Stream
from eventbus.netapi.sse.pump import Pump, Pumped
from eventbus.netapi.sse.stream import KEEPALIVE, RETRY, event_record
from eventbus.netapi.sse.streamstate import StreamState

log = logging.getLogger(__name__)

# Longest a stream thread sleeps before it checks its token's expiry and the engine state.
STREAM_TICK = 1.0
# Resumed records read per chunk.
RESUME_CHUNK = 500


class EventStreams:
    """Writes the open ``/events`` streams of one API process."""

    def __init__(self, hub: Hub, feed: BusFeed | FleetFeed, pump: Pump | None, complaints: Complaints) -> None:
        self.hub = hub
        self.feed = feed
        self.pump = pump
        self.complaints = complaints

    def serve(self, principal: Principal, view_key: tuple, accepts: auth.EventFilter | None,
              last_seen: int | None, peer: str, sock: socket.socket | None) -> Iterator[bytes]:
        """The stream's body; ``sock`` (plain HTTP) is handed to the pump after the first chunks."""
        hub = self.hub
        fleet = self.feed if isinstance(self.feed, FleetFeed) else None
        stream, head, _epoch = hub.open(view_key, accepts, last_seen or 0)
        state = StreamState(stream, principal.expire, principal.user, peer)
        try:
            yield RETRY
            if last_seen is not None:
                try:
                    if fleet is not None:
                        if not fleet.positioned.is_set():
                            # The cluster has not answered the API yet: no head to resume up to. Wait, with
                            # keepalives, then take the stream's place again at the head now known.
                            yield from fleet.wait_position(state)
                            if not fleet.positioned.is_set():
                                return
                            waited = stream
                            stream, head, _epoch = hub.open(view_key, accepts, last_seen)
                            state.stream = stream
                            hub.release(waited)
                        if last_seen > head:
                            # No stream seq yet: an id of another scheme (a master without cluster). Live from
                            # here, as for a new client, rather than skip the stream's next seqs up to it.
                            waited = stream
                            stream, head, _epoch = hub.open(view_key, accepts, head)
                            state.stream = stream
                            hub.release(waited)
                            last_seen = head
                        yield from fleet.resume(stream, state, last_seen, head)
                    else:
                        yield from self._resume(stream, last_seen, head)
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
            data = hub.read(state.stream, min(STREAM_TICK, left, state.quiet_left(monotonic())))
            if data is None:
                if not hub.closed:
                    self.complaints.refuse("slow", f"dropped the stream of {state.user} from {state.peer}: "
                                                   f"{hub.behind()}")
                return
            if data:
                yield data
                state.wrote()
            elif state.keepalive_due(monotonic()):
                yield KEEPALIVE
                state.wrote()

    def _resume(self, stream: Stream, last_seen: int, head: int) -> Iterator[bytes]:
        """What a client that last saw ``last_seen`` missed up to ``head``, from the master's window and
        journal, in chunks through the stream's view; a gap record first where events are gone.

        Read on the bus feed's zmq context: the feed's stop ends a resume at
        once. ``BusUnavailableError`` when the master does not answer or the
        API is stopping.
        """
        if last_seen >= head:
            return
        context, sock_dir = self.feed.context, str(self.feed.master.sock_dir)
        if context is None or context.closed:
            raise BusUnavailableError("the API is stopping", sock_dir=sock_dir)
        client = control.Client(context, sock_dir)
        records = (event_record(ev.seq, ev.tag, ev.data) for ev in history.read_history(client, last_seen, head + 1))
        try:
            while chunk := list(itertools.islice(records, RESUME_CHUNK)):
                if data := stream.view.render(chunk):
                    yield data
        except zmq.ZMQError as exc:
            raise BusUnavailableError(f"cannot ask the master bus: {exc}", sock_dir=sock_dir) from None
        except BusUnavailableError:
            raise
        except EventBusError as exc:
            raise BusUnavailableError(str(exc), sock_dir=sock_dir) from None
        finally:
            client.close()
