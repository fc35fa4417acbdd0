"""fsync off the minion's loop: the spool's once-a-second sync handed to a thread of its own.

An fsync can take from a millisecond to seconds on a busy disk; on the
minion's loop it would hold up relaying, acks and heartbeats for that long.
``SpoolSync.request`` duplicates the file descriptors to sync (so the spool
may close or rotate its files meanwhile) and wakes the thread, which
fsyncs and closes the duplicates. Requests made while a sync runs are folded
into one more sync after it. ``close`` waits for the thread; the spool's last
sync at shutdown is then made on the caller's thread.
"""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


class SpoolSync:
    """One thread that fsyncs file descriptors handed to it, the latest request only."""

    def __init__(self, name: str = "spool-sync") -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: list[int] = []  # duplicated fds waiting to be synced
        self._busy = False
        self._closed = False
        self.synced = 0  # syncs done, for tests and status
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self, fds: list[int]) -> None:
        """fsync ``fds`` soon, on the thread (each is duplicated here; the caller keeps its own)."""
        dups = [os.dup(fd) for fd in fds]
        with self._lock:
            stale, self._pending = self._pending, dups
            self._wake.notify()
        for fd in stale:  # an older request not started yet: the new one covers it
            os.close(fd)

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or being synced; whether that happened within ``timeout``."""
        with self._lock:
            return self._wake.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._pending or self._closed)
                if self._closed and not self._pending:
                    return
                fds, self._pending = self._pending, []
                self._busy = True
            try:
                for fd in fds:
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        log.error("could not fsync the relay spool: %s", exc.strerror)
                    finally:
                        os.close(fd)
            finally:
                with self._lock:
                    self._busy = False
                    self.synced += 1
                    self._wake.notify_all()

    def close(self) -> None:
        """Finish what was requested, then stop the thread."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._thread.join()
