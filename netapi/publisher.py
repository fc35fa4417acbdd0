"""The API process's publisher on the master bus, for ``/hook`` and ``/cloudevents``.

Its bus handle opens with the first event fired (an API that only streams
opens none) and is shared by the request threads under one lock, so a
batch's events reach the bus together and in order.
"""
from __future__ import annotations

import threading

from eventbus import event
from eventbus.config import MasterConfig


class Publisher:
    """Fire events on the master bus from any request thread."""

    def __init__(self, master: MasterConfig) -> None:
        self.master = master
        self._handle: event.BusHandle | None = None
        self._lock = threading.Lock()
        self._closed = False

    def fire(self, data: dict, tag: str) -> bool:
        """Fire one event; ``False`` if the master did not take it."""
        return self.fire_all([(tag, data)]) == 1

    def fire_all(self, events: list[tuple[str, dict]]) -> int:
        """Fire ``(tag, data)`` events in order; how many the master took before one was not taken."""
        with self._lock:
            if self._handle is None:
                if self._closed:
                    return 0
                self._handle = event.MasterEvent(self.master.sock_dir, opts=self.master, listen=False)
            fire = self._handle.fire_event
            for count, (tag, data) in enumerate(events):
                if not fire(data, tag, timeout=2000):
                    return count
            return len(events)

    def close(self) -> None:
        """Close the handle (engine stop); what is fired after that is not taken."""
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.destroy()
                self._handle = None
