"""Run a daemon: hold its sock_dir, start its bus and components, stop cleanly on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import os
import signal
from typing import Callable, Protocol

import zmq

from daemon.bus import Bus
from daemon.loop import Loop
from daemon.ownership import SockDirLock
from eventbus import wire
from eventbus.config import BusConfig

log = logging.getLogger(__name__)


class Component(Protocol):
    """A part of a daemon that lives beside its bus (the minion link, presence, ...)."""

    def close(self) -> None: ...


ComponentFactory = Callable[[BusConfig, zmq.Context, Loop, Bus], Component]


def serve(settings: BusConfig, components: tuple[ComponentFactory, ...] = ()) -> None:
    """Run the bus of ``settings`` (plus ``components``) until a signal stops it."""
    loop = Loop()
    loop.stop_on_signals(signal.SIGTERM, signal.SIGINT)
    context = zmq.Context()
    lock = SockDirLock(wire.endpoints(settings.sock_dir), settings.node)
    lock.acquire()
    parts: list[Component] = []
    bus = None
    try:
        bus = Bus(settings, context, loop)
        for make in components:
            parts.append(make(settings, context, loop, bus))
        log.info("%s bus ready on %s (pid %d)", settings.node, settings.sock_dir, os.getpid())
        loop.run()
    finally:
        for part in reversed(parts):
            part.close()
        if bus is not None:
            bus.close()
        lock.release()
        loop.close()
        # Sockets a failed component left open are closed without linger (else term() would wait on
        # them forever); sockets already closed keep their own linger.
        context.destroy(linger=0)
        log.info("%s daemon stopped", settings.node)
