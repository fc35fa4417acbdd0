"""A forwarder's bounded on-disk outbox for one broker, with its durable intake cursor.

Events wait here, in bus order, until the broker has accepted them. One
SQLite file (WAL) per broker holds the waiting events and the broker's
position on the bus (``intake``: the last seq the reader has handled for this
broker), written in the same transaction: after a crash or ``kill -9`` the
outbox and the cursor agree, so the reader resumes exactly after ``intake``
and nothing is lost or queued twice. Past ``max_events`` waiting, the oldest
are dropped and counted.

Threads: the bus reader calls ``append``; the broker's drain calls ``read``
and ``ack``. Each side uses its own connection.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

import msgpack

from eventbus.errors import OutboxError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, tag TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_packb = msgpack.Packer(use_bin_type=True).pack


class Outbox:
    """The waiting events of one broker in ``path``; ``created`` tells a new outbox from a reopened one."""

    def __init__(self, path: str | os.PathLike, max_events: int) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.created = not self.path.exists()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._reader = self._connect()
            meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
            self.pending = self._writer.execute("SELECT count(*) FROM events").fetchone()[0]
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}", path=str(self.path)) from None
        self.intake: int | None = meta.get("intake")
        self.delivered: int = meta.get("delivered", 0)
        self.dropped: int = meta.get("dropped", 0)
        self._handed = 0  # the last seq ``read`` returned, so the next read continues after it

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        # WAL: the reader and the drain do not block each other. synchronous=NORMAL: a committed
        # transaction survives the process being killed (not a power cut), at far lower cost than FULL.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def start_at(self, seq: int) -> None:
        """Make ``seq`` the intake position of a new outbox (a new broker starts at the bus head)."""
        self.append((), seq)

    def append(self, rows: Iterable[tuple[int, str, dict]], intake: int) -> int:
        """Queue ``(seq, tag, data)`` rows and move ``intake`` to ``intake``, atomically; events dropped."""
        packed = [(seq, tag, _packb(data)) for seq, tag, data in rows]
        dropped = 0
        try:
            with self._lock:
                cursor = self._writer
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    cursor.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?)", packed)
                    added = len(packed)
                    over = self.pending + added - self.max_events
                    if over > 0:
                        dropped = cursor.execute(
                            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                            (over,)).rowcount
                        cursor.execute("INSERT INTO meta VALUES ('dropped', ?) ON CONFLICT(key) DO UPDATE "
                                       "SET value = value + excluded.value", (dropped,))
                    cursor.execute("INSERT INTO meta VALUES ('intake', ?) ON CONFLICT(key) DO UPDATE "
                                   "SET value = excluded.value", (intake,))
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                self.pending += added - dropped
                self.dropped += dropped
                self.intake = intake
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write outbox {self.path}: {exc}", path=str(self.path)) from None
        return dropped

    def read(self, limit: int) -> list[tuple[int, str, dict]]:
        """The next (at most ``limit``) waiting events after those already handed out, oldest first."""
        try:
            rows = self._reader.execute("SELECT seq, tag, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                        (self._handed, limit)).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot read outbox {self.path}: {exc}", path=str(self.path)) from None
        if rows:
            self._handed = rows[-1][0]
        return [(seq, tag, msgpack.unpackb(data, raw=False, strict_map_key=False)) for seq, tag, data in rows]

    def rewind(self) -> None:
        """Hand out the waiting events again from the oldest (after a failed delivery)."""
        self._handed = 0

    def ack(self, seq: int, count: int) -> None:
        """The broker accepted every event up to ``seq`` (``count`` of them): forget them."""
        try:
            with self._lock:
                cursor = self._reader
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    removed = cursor.execute("DELETE FROM events WHERE seq <= ?", (seq,)).rowcount
                    cursor.execute("INSERT INTO meta VALUES ('delivered', ?) ON CONFLICT(key) DO UPDATE "
                                   "SET value = value + excluded.value", (count,))
                    cursor.execute("COMMIT")
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                self.pending -= removed
                self.delivered += count
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot write outbox {self.path}: {exc}", path=str(self.path)) from None

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            self._reader.close()
