"""One SSE stream's state, shared by both writers (the pump for plain HTTP, the request thread for TLS).

No sockets: its place in the hub (which hands it finished bytes), when it
last wrote, when its token expires. Each writer only asks it what is due and
tells it what went out, so keepalive and expiry live here once.
"""
from __future__ import annotations

import time

from eventbus.netapi.sse.hub import Stream
from eventbus.netapi.sse.stream import KEEPALIVE_AFTER


class StreamState:
    """The writer-independent part of one ``/events`` stream."""

    __slots__ = ("stream", "expire", "last_write", "user", "peer")

    def __init__(self, stream: Stream, expire: float, user: str, peer: str) -> None:
        self.stream = stream
        self.expire = expire
        self.last_write = time.monotonic()
        self.user = user
        self.peer = peer

    def wrote(self, now: float | None = None) -> None:
        self.last_write = time.monotonic() if now is None else now

    def keepalive_due(self, now: float) -> bool:
        return now - self.last_write >= KEEPALIVE_AFTER

    def quiet_left(self, now: float) -> float:
        """Seconds until a keepalive is due."""
        return max(KEEPALIVE_AFTER - (now - self.last_write), 0.0)

    def expired(self, wall: float | None = None) -> bool:
        return (time.time() if wall is None else wall) >= self.expire
