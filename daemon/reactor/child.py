"""The master's reactor child: runs while the master has rules, restarted if it dies, stopped with the master.

The master starts it, watches it once a second, stops it (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``)
before its bus closes, and on SIGHUP hands it the re-read rules (``reload``): docs/reactor.md, Where it
runs and Reload and status.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys

import zmq

from eventbus.daemon.bus import Bus
from eventbus.daemon.childproc import Supervised
from eventbus.daemon.loop import Loop
from eventbus.config import MasterConfig

log = logging.getLogger(__name__)

class ReactorChild(Supervised):
    """The reactor process of a master with rules (none while the master has no rules)."""

    RELOADS = ("reactor",)

    def __init__(self, settings: MasterConfig, context: zmq.Context, loop: Loop, bus: Bus) -> None:
        super().__init__("reactor", [], loop)
        self.settings = settings
        self.bus = bus
        self.rules = len(settings.reactor)
        # A reactor started by a reload reacts to events after this seq only, not to the master's past.
        self.after: int | None = None
        self.stopping = False  # terminated on purpose: its rules were removed
        if self.rules:
            self._start("started")

    def _start(self, how: str) -> subprocess.Popen | None:
        """Start the reactor process and log it as ``how`` (started, restarted; empty: the caller says it)."""
        if self.settings.source is None:
            log.error("reactor: the master was started without a config file; its rules cannot be read "
                      "by the reactor process")
            return None
        self.argv = [sys.executable, "-m", "eventbus.daemon.reactor", str(self.settings.source)]
        if self.after is not None:
            self.argv += ["--after", str(self.after)]
        # Born with SIGHUP blocked (the mask survives exec): one sent before the reactor has its handler
        # waits for it instead of killing it (``Reactor.install_signals`` unblocks it).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc = self.spawn()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if how:
            log.info("reactor %s (pid %d, %d rules)", how, proc.pid, self.rules)
        return proc

    def start(self, how: str = "started") -> subprocess.Popen | None:
        return self._start(how)

    def reload(self, fresh: MasterConfig) -> str:
        """Apply the re-read rules of ``fresh``; what was done, for the master's SIGHUP line."""
        had, self.rules = self.rules, len(fresh.reactor)
        live = self.live()
        if not self.rules:
            if live is None:
                self.proc, self.restart_at = None, 0.0
            elif not self.stopping:
                self.stopping = True
                live.terminate()
            return "reactor stopped (no rules)"
        if had:
            if live is not None and not self.stopping:
                live.send_signal(signal.SIGHUP)
            # else a restart is due, and the restarted reactor reads these rules
            return f"reactor rules reloaded ({self.rules} rules)"
        self.after = self.bus.seq
        if live is not None:
            return f"reactor starting ({self.rules} rules) once the stopping one has exited"
        self.stopping, self.restart_at = False, 0.0
        started = self._start("")
        if started is None:
            return "reactor not started (no config file)"
        return f"reactor started (pid {started.pid}, {self.rules} rules)"

    def check(self) -> None:
        proc = self.proc
        if self.closing or proc is None or proc.poll() is None:
            return
        if self.stopping:
            self.stopping = False
            log.info("reactor (pid %d) stopped", proc.pid)
            if self.rules:
                self._start("started")  # rules came back while it was stopping
            else:
                self.proc = None
            return
        super().check()
