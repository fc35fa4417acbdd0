"""One SSE stream's state, shared by both writers (the pump for plain HTTP, the request thread for TLS).

No sockets: where the stream is in the hub, its filter view, the resume seam,
when it last wrote, when its token expires. Each writer only asks it what to
write next and tells it what went out, so keepalive, expiry, lag and the
resume seam live here once.
"""
from __future__ import annotations

import time

from netapi.hub import Hub, Stream, View
from netapi.stream import KEEPALIVE_AFTER


class StreamState:
    """The writer-independent part of one ``/events`` stream."""

    __slots__ = ("stream", "view", "expire", "skip_upto", "last_write", "user", "peer")

    def __init__(self, stream: Stream, view: View, expire: float, skip_upto: int, user: str, peer: str) -> None:
        self.stream = stream
        self.view = view
        self.expire = expire
        # Live records up to this seq were already sent by the resume: skipped until the seam is passed.
        self.skip_upto = skip_upto
        self.last_write = time.monotonic()
        self.user = user
        self.peer = peer

    def render(self, hub: Hub, span: tuple[int, int] | None) -> bytes | None:
        """The bytes of the hub's records in ``span`` this stream may see (``b""``: none); ``None`` if it
        fell so far behind that the hub's ring no longer holds what it has not sent."""
        if span is None:
            return None
        start, end = span
        if start == end:
            return b""
        data = self.view.render(hub, start, end, self.skip_upto)
        if data is not None and self.skip_upto:
            newest = hub.records(end - 1, end)
            if newest and newest[0].seq > self.skip_upto:
                self.skip_upto = 0  # past the seam: from here every record is new to the client
        return data

    def wrote(self, now: float | None = None) -> None:
        self.last_write = time.monotonic() if now is None else now

    def keepalive_due(self, now: float) -> bool:
        return now - self.last_write >= KEEPALIVE_AFTER

    def quiet_left(self, now: float) -> float:
        """Seconds until a keepalive is due."""
        return max(KEEPALIVE_AFTER - (now - self.last_write), 0.0)

    def expired(self, wall: float | None = None) -> bool:
        return (time.time() if wall is None else wall) >= self.expire

    def behind(self, hub: Hub) -> str:
        return f"it fell {hub.capacity} events behind"
