"""A helper process of a daemon: started with it, restarted when it dies, stopped (SIGTERM, then SIGKILL) with it.

The master's reactor (``eventbus.daemon.reactor.child``, which adds SIGHUP hand-over and a stop on purpose)
and its cluster process (``eventbus.daemon.cluster.component``) run this way. The check runs from the
daemon's loop once a second; a child that exits is logged once with its code and restarted a second later.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time

from eventbus.daemon.loop import Loop

log = logging.getLogger(__name__)

# The environment variable a child finds its daemon's pid in: it stops when that is no longer its parent.
MASTER_PID_ENV = "EVENTBUS_MASTER_PID"
CHECK_EVERY = 1.0
RESTART_DELAY = 1.0
STOP_TIMEOUT = 10.0


class Supervised:
    """One child process ``argv``, named ``what`` in the log."""

    def __init__(self, what: str, argv: list[str], loop: Loop) -> None:
        self.what = what
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.restart_at = 0.0
        self.closing = False
        loop.call_every(CHECK_EVERY, self.check)

    def spawn(self) -> subprocess.Popen:
        """Start ``argv`` as the child."""
        env = {**os.environ, MASTER_PID_ENV: str(os.getpid())}
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, env=env)
        return self.proc

    def start(self, how: str = "started") -> subprocess.Popen | None:
        proc = self.spawn()
        log.info("%s %s (pid %d)", self.what, how, proc.pid)
        return proc

    def live(self) -> subprocess.Popen | None:
        """The process while it runs."""
        return self.proc if self.proc is not None and self.proc.poll() is None else None

    def check(self) -> None:
        proc = self.proc
        if self.closing or proc is None or proc.poll() is None:
            return
        now = time.monotonic()
        if not self.restart_at:
            log.error("%s (pid %d) exited with %s; restarting it in %g s", self.what, proc.pid, proc.returncode,
                      RESTART_DELAY)
            self.restart_at = now + RESTART_DELAY
        elif now >= self.restart_at:
            self.restart_at = 0.0
            self.start("restarted")

    def close(self) -> None:
        self.closing = True
        live = self.live()
        if live is None:
            return
        live.terminate()
        try:
            live.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) did not stop within %g s; killing it", self.what, live.pid, STOP_TIMEOUT)
            live.kill()
            live.wait()
