"""The API's own figures in a status file, so ``eventbus status`` reads them with no token.

``GET /metrics`` may need an admin's login; the CLI on the same host reads
this file instead (``eventbus.systemstatus.read_api``), as it reads the
reactor's. It is rewritten at most once a second, only when a figure
changed, and removed when the API stops. Its directory is the API's own
(0700) and the file is 0600: which streams are open is no one else's business.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cherrypy.process import plugins

from eventbus.cloudevents import jsonfile

log = logging.getLogger(__name__)

INTERVAL = 1.0


class StatusFile(plugins.Monitor):
    """Keep ``path`` holding ``{"running", "pid", "started", "url", **figures()}`` while the engine runs."""

    def __init__(self, bus: plugins.wspbus.Bus, path: Path, url: str, figures: Callable[[], dict[str, Any]],
                 interval: float = INTERVAL) -> None:
        super().__init__(bus, self.refresh, frequency=interval, name="api-status")
        self.path = path
        self.url = url
        self.figures = figures
        self.started = time.time()
        self._written: dict[str, Any] | None = None
        self._failing = False
        # The timer thread is not joined at stop: the lock keeps it from writing after the removal.
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        with self._lock:
            self._running = True
            self._written = None
        self.refresh()
        super().start()

    start.priority = 70  # type: ignore[attr-defined]

    def stop(self) -> None:
        super().stop()
        with self._lock:
            self._running = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def refresh(self) -> None:
        """Write the figures if they changed since the last write."""
        figures = self.figures()
        with self._lock:
            if not self._running or figures == self._written:
                return
            status = {"running": True, "pid": os.getpid(), "started": self.started, "url": self.url, **figures}
            try:
                jsonfile.write_atomic(self.path, status, mode=0o600, dir_mode=0o700)
            except OSError as exc:
                if not self._failing:  # once, not every second
                    log.warning("cannot write the API's status file %s: %s", self.path, exc)
                self._failing = True
                return
            self._failing = False
            self._written = figures
