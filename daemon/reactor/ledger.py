"""The reactor's record of what ran: (rule, seq, action) lines, written before the cursor moves past them.

An action's line is appended when it finishes; ``sync`` makes the lines
durable and must run before the cursor is saved past their seq (record, then
acknowledge). On restart the reactor re-reads from its cursor and skips every
(rule, seq, action) listed here, so nothing that finished runs twice. Lines
at or before the saved cursor are no longer needed and are dropped when the
file is rewritten (``compact``).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# Rewrite the file once it holds this many lines.
COMPACT_AFTER = 20_000

Entry = tuple[str, int, int]


class Ledger:
    """An append-only file of finished (rule key, seq, action index) entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[Entry] = set()
        self._lock = threading.Lock()
        self._lines = 0
        self._compact_at = COMPACT_AFTER
        self._dirty = False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._load()
        # Unbuffered: a line is in the kernel as soon as the action is recorded (a kill -9 keeps it).
        self._file = open(path, "ab", buffering=0)

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        if raw and not raw.endswith(b"\n"):
            # A line torn by a crash: cut it, so the next record starts on a line of its own.
            keep = raw.rfind(b"\n") + 1
            log.warning("reactor ledger %s: dropping a torn last line %r", self.path, raw[keep:][:80])
            os.truncate(self.path, keep)
            raw = raw[:keep]
        for line in raw.split(b"\n"):
            parts = line.rsplit(b" ", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                if line:
                    log.warning("reactor ledger %s: ignoring a torn line %r", self.path, line[:80])
                continue
            self.done.add((parts[0].decode("utf-8", "replace"), int(parts[1]), int(parts[2])))
            self._lines += 1

    def __contains__(self, entry: Entry) -> bool:
        return entry in self.done

    def record(self, entry: Entry) -> None:
        """Note that ``entry`` ran (durable at the next ``sync``)."""
        line = b"%s %d %d\n" % (entry[0].replace("\n", " ").encode(), entry[1], entry[2])
        with self._lock:
            self.done.add(entry)
            self._file.write(line)
            self._lines += 1
            self._dirty = True

    def sync(self) -> None:
        """Make every recorded entry durable."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            fd = self._file.fileno()
        # Outside the lock: actions finishing meanwhile record without waiting for the disk.
        os.fsync(fd)

    def compact(self, acked: int) -> None:
        """Forget entries at or before ``acked`` (the saved cursor) once the file has grown."""
        with self._lock:
            if self._lines < self._compact_at:
                return
            self.done = {entry for entry in self.done if entry[1] > acked}
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "wb") as out:
                for rule, seq, index in sorted(self.done, key=lambda e: e[1]):
                    out.write(b"%s %d %d\n" % (rule.encode(), seq, index))
                out.flush()
                os.fsync(out.fileno())
            self._file.close()
            os.replace(temporary, self.path)
            self._file = open(self.path, "ab", buffering=0)
            self._lines = len(self.done)
            # Entries past a long-running action's seq stay; do not rewrite them on every save.
            self._compact_at = max(COMPACT_AFTER, 2 * self._lines)
            self._dirty = False

    def close(self) -> None:
        self.sync()
        self._file.close()
