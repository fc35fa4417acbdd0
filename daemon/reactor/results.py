"""The reactor's result events: fired from one thread that owns its bus handle, off the actions' threads.

A result too big for ``max_event_size`` (a large ``run`` stdout) is fired
again without its stdout, with ``stdout_dropped`` saying why, so the result
itself is never lost to its output.
"""
from __future__ import annotations

import logging
import queue
import threading

from eventbus import config
from eventbus.errors import EventBusError, EventTooLargeError
from eventbus.event import MasterEvent

log = logging.getLogger(__name__)


class Publisher:
    """One thread owning the bus handle that fires the result events (off the actions' threads)."""

    def __init__(self, settings: config.MasterConfig) -> None:
        self.settings = settings
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="reactor-publisher", daemon=True)
        self.thread.start()

    def publish(self, tag: str, data: dict) -> None:
        self.queue.put((tag, data))

    def _run(self) -> None:
        handle = MasterEvent(self.settings.sock_dir, opts=self.settings, listen=False)
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    return
                tag, data = item
                try:
                    self._fire(handle, tag, data)
                except EventTooLargeError as exc:
                    if not data.get("stdout"):
                        log.error("reactor: cannot report %s: %s", tag, exc)
                        continue
                    # A big stdout must not cost the result itself: report it without.
                    try:
                        self._fire(handle, tag, {**data, "stdout": "", "stdout_dropped": str(exc)})
                    except EventBusError as again:
                        log.error("reactor: cannot report %s: %s", tag, again)
                except EventBusError as exc:
                    log.error("reactor: cannot report %s: %s", tag, exc)
        finally:
            handle.destroy()

    @staticmethod
    def _fire(handle: MasterEvent, tag: str, data: dict) -> None:
        for _ in range(5):
            if handle.fire_event(data, tag, timeout=1000):
                return
        log.error("reactor: the master bus did not take %s for 5 s; result of seq %s not reported", tag,
                  data.get("seq"))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(10)
