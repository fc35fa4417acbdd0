"""The master's reactor child: started with the master when it has rules, restarted if it dies, stopped with it.

The reactor runs in its own process (``daemon.reactor``) so a slow action,
a big template or a thousand running commands never touch the bus loop; the
master only starts it, watches it once a second, forwards SIGHUP to it (rule
reload) and stops it (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``) before
its bus closes, so the reactor saves its position while the bus still runs.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from typing import Any

import zmq

from daemon.bus import Bus
from daemon.loop import Loop
from eventbus.config import MasterConfig

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
CHECK_EVERY = 1.0
RESTART_DELAY = 1.0


class ReactorChild:
    """The reactor process of a master with rules (nothing at all for a master without)."""

    def __init__(self, settings: MasterConfig, context: zmq.Context, loop: Loop, bus: Bus) -> None:
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.closing = False
        self.restart_at = 0.0
        if not settings.reactor:
            return
        if settings.source is None:
            log.error("reactor: the master was started without a config file; its rules cannot be read "
                      "by the reactor process")
            return
        signal.signal(signal.SIGHUP, self._forward_hup)
        self._start()
        loop.call_every(CHECK_EVERY, self._check)

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon.reactor", str(self.settings.source)],
                                     stdin=subprocess.DEVNULL)
        log.info("reactor started (pid %d, %d rules)", self.proc.pid, len(self.settings.reactor))

    def _forward_hup(self, _signum: int, _frame: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def _check(self) -> None:
        if self.closing or self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if not self.restart_at:
            log.error("reactor (pid %d) exited with %s; restarting it in %g s", self.proc.pid,
                      self.proc.returncode, RESTART_DELAY)
            self.restart_at = now + RESTART_DELAY
        elif now >= self.restart_at:
            self.restart_at = 0.0
            self._start()

    def close(self) -> None:
        self.closing = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("reactor (pid %d) did not stop within %g s; killing it", self.proc.pid, STOP_TIMEOUT)
            self.proc.kill()
            self.proc.wait()
