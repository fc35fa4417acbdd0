"""Run a daemon: hold its sock_dir, start its bus and components, stop cleanly on SIGTERM/SIGINT.

SIGHUP never stops a daemon: it re-reads the config file (``eventbus.reload``)
from the loop, hands the keys a component lists in its ``RELOADS`` to that
component's ``reload(fresh)``, and logs one line naming the changed keys that
need a restart.
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Callable, Protocol

import zmq

from eventbus.daemon.bus import Bus
from eventbus.daemon.loop import Loop
from eventbus.daemon.ownership import SockDirLock
from eventbus import config
from eventbus.bus import wire
from eventbus.config import BusConfig
from eventbus.reload import Reloader

log = logging.getLogger(__name__)


class Component(Protocol):
    """A part of a daemon that lives beside its bus (the minion link, presence, ...).

    One that can take config keys while running lists them in ``RELOADS`` and
    has ``reload(fresh_settings) -> str | None`` (what it did, for the SIGHUP line).
    """

    def close(self) -> None: ...


ComponentFactory = Callable[[BusConfig, zmq.Context, Loop, Bus], Component]


def serve(settings: BusConfig, components: tuple[ComponentFactory, ...] = (), io_threads: int = 1) -> None:
    """Run the bus of ``settings`` (plus ``components``) until a signal stops it.

    ``io_threads``: ZeroMQ's I/O threads; the master takes two, one for its
    minions' CURVE connections (``eventbus.daemon.link.master``).
    """
    loop = Loop()
    loop.stop_on_signals(signal.SIGTERM, signal.SIGINT)
    reloader = Reloader(settings, lambda path: config.load(type(settings), path))
    # The handler only queues the reload: the loop runs it between two turns (the wake-up fd ends its sleep).
    previous_hup = signal.signal(signal.SIGHUP, lambda _signum, _frame: loop.call_later(0, reloader.reload))
    context = zmq.Context(io_threads=io_threads)
    lock = SockDirLock(wire.endpoints(settings.sock_dir), settings.node)
    lock.acquire()
    parts: list[Component] = []
    bus = None
    try:
        bus = Bus(settings, context, loop)
        for make in components:
            part = make(settings, context, loop, bus)
            parts.append(part)
            for key in getattr(part, "RELOADS", ()):
                reloader.take(key, part.reload)  # type: ignore[attr-defined]
        log.info("%s bus ready on %s (pid %d)", settings.node, settings.sock_dir, os.getpid())
        loop.run()
    finally:
        for part in reversed(parts):
            part.close()
        if bus is not None:
            bus.close()
        lock.release()
        signal.signal(signal.SIGHUP, previous_hup)
        loop.close()
        # Sockets a failed component left open are closed without linger (else term() would wait on
        # them forever); sockets already closed keep their own linger.
        context.destroy(linger=0)
        log.info("%s daemon stopped", settings.node)
