"""A forwarder's bounded on-disk outbox for one broker, with its durable intake cursor.

One SQLite file (WAL) per broker holds the waiting events, in bus order, and ``intake`` (the last seq the
reader handled for this broker), written in the same transaction, so after a crash the outbox and the
cursor agree. A row is one reader batch (``first``..``last``, ``count``, one msgpack array); a read, an
ack or a drop that ends inside a row rewrites it with the events it keeps. The events ``read`` handed out
are being delivered, not waiting, until ``ack`` or ``rewind``: the ``max_events`` bound drops only waiting
ones, the oldest first. Threads: the bus reader calls ``append``, the broker's drain ``read``, ``ack`` and
``rewind``, each side on its own connection; a lock keeps a drop from passing a read. The design:
docs/forward.md, Delivery.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import msgpack

from eventbus.errors import OutboxError
from eventbus.journal.format import SEQ_LIMIT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, count INTEGER NOT NULL,
                                    events BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_packb = msgpack.Packer(use_bin_type=True).pack
Row = tuple[int, str, dict]  # (seq, tag, data)


def _pack(rows: list[Row]) -> bytes:
    """Rows as one flat msgpack array ``[seq, tag, data, seq, tag, data, ...]``."""
    return _packb([field for row in rows for field in row])


def _unpack(blob: bytes, first: int) -> list[Row]:
    """The rows of the batch starting at ``first``; ``ValueError`` when the blob is not what ``_pack`` wrote
    for it (a corrupt file)."""
    try:
        flat = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ValueError(f"a batch row is not msgpack ({type(exc).__name__})") from None
    if not isinstance(flat, list) or len(flat) % 3:
        raise ValueError("a batch row is not a list of (seq, tag, data)")
    fields = iter(flat)
    rows = list(zip(fields, fields, fields))
    seqs = [seq for seq, _, _ in rows]
    if not all(type(seq) is int and isinstance(tag, str) and isinstance(data, dict) for seq, tag, data in rows) \
            or any(a >= b for a, b in zip(seqs, seqs[1:])) or seqs[:1] != [first]:
        raise ValueError("a batch row holds events that are not (seq, tag, data) in seq order")
    return rows


def _event_data(blob: bytes) -> dict:
    """One event's data in the old one-row-per-event table; ``ValueError`` when it is not a msgpack map."""
    try:
        data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ValueError(f"an event row is not msgpack ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError("an event row's data is not a map")
    return data


def _rewrite(db: sqlite3.Connection, first: int, kept: list[Row]) -> None:
    """Rewrite the row starting at ``first`` with the events it keeps (none: the row goes; a row whose
    ``count`` said more than it held keeps nothing)."""
    if kept:
        db.execute("UPDATE batches SET first = ?, count = ?, events = ? WHERE first = ?",
                   (kept[0][0], len(kept), _pack(kept), first))
    else:
        db.execute("DELETE FROM batches WHERE first = ?", (first,))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` .. ``COMMIT`` on ``db``, rolled back when anything (the commit too) fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _check_rows(db: sqlite3.Connection, meta: dict) -> None:
    """``ValueError`` when the rows or the cursor cannot be what ``append`` wrote: a seq past ``SEQ_LIMIT``
    (the bus numbers far below it), a row of no events, or one counting more events than its seqs span."""
    bad, = db.execute("SELECT count(*) FROM batches WHERE first < 1 OR last < first OR last > ? OR count < 1 "
                      "OR count > last - first + 1", (SEQ_LIMIT,)).fetchone()
    if bad:
        raise ValueError(f"{bad} batch rows are corrupt (their seqs or counts cannot be)")
    for key in ("intake", "delivered", "dropped"):
        value = meta.get(key, 0)
        if not isinstance(value, int) or not 0 <= value <= SEQ_LIMIT:
            raise ValueError(f"its {key} of {value!r} cannot be")


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
            self._upgrade()
            self._reader = self._connect()
            meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
            self.pending, self._newest = self._writer.execute(
                "SELECT coalesce(sum(count), 0), coalesce(max(last), 0) FROM batches").fetchone()
            _check_rows(self._writer, meta)
        except (sqlite3.Error, ValueError) as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}", path=str(self.path)) from None
        self.intake: int | None = meta.get("intake")
        self.delivered: int = meta.get("delivered", 0)
        self.dropped: int = meta.get("dropped", 0)
        # The last seq ``read`` returned: the next read continues after it, and the bound never drops an
        # event up to it (handed to the broker) until ``ack`` forgets them or ``rewind`` takes them back.
        self._handed = 0
        self._handed_count = 0  # how many of the held events are handed (all with seq <= _handed)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        # WAL: the reader and the drain do not block each other. synchronous=NORMAL: a committed
        # transaction survives the process being killed (not a power cut), at far lower cost than FULL.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    def _upgrade(self) -> None:
        """Move the events of an outbox written one row per event (before batches) into batch rows."""
        db = self._writer
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone():
            return
        with _transaction(db):
            query = db.execute("SELECT seq, tag, data FROM events ORDER BY seq")
            while chunk := query.fetchmany(2000):
                rows = [(seq, tag, _event_data(data)) for seq, tag, data in chunk]
                db.execute("INSERT INTO batches VALUES (?, ?, ?, ?)",
                           (rows[0][0], rows[-1][0], len(rows), _pack(rows)))
            db.execute("DROP TABLE events")

    def start_at(self, seq: int) -> None:
        """Make ``seq`` the intake position of a new outbox (a new broker starts at the bus head)."""
        self.append((), seq)

    def append(self, rows: Iterable[Row], intake: int) -> int:
        """Queue ``(seq, tag, data)`` rows (in seq order) and move ``intake`` to ``intake``, atomically;
        how many events were dropped to stay within the bound."""
        fresh: list[Row] = []
        newest = self._newest
        for row in rows:
            if row[0] > newest:  # an event already held is held once
                fresh.append(row)
                newest = row[0]
        try:
            with self._lock:
                db = self._writer
                with _transaction(db):
                    dropped_old = dropped_new = 0
                    waiting = self.pending - self._handed_count
                    over = waiting + len(fresh) - self.max_events
                    if over > 0:
                        dropped_old = self._drop_oldest(min(over, waiting))
                        dropped_new = over - dropped_old  # more new events than the bound: keep the newest
                        fresh = fresh[dropped_new:]
                        db.execute("INSERT INTO meta VALUES ('dropped', ?) ON CONFLICT(key) DO UPDATE "
                                   "SET value = value + excluded.value", (dropped_old + dropped_new,))
                    if fresh:
                        db.execute("INSERT INTO batches VALUES (?, ?, ?, ?)",
                                   (fresh[0][0], fresh[-1][0], len(fresh), _pack(fresh)))
                    db.execute("INSERT INTO meta VALUES ('intake', ?) ON CONFLICT(key) DO UPDATE "
                               "SET value = excluded.value", (intake,))
                dropped = dropped_old + dropped_new
                self.pending += len(fresh) - dropped_old
                self.dropped += dropped
                self.intake = intake
                self._newest = newest
        except (sqlite3.Error, ValueError) as exc:
            raise OutboxError(f"cannot write outbox {self.path}: {exc}", path=str(self.path)) from None
        return dropped

    def _drop_oldest(self, count: int) -> int:
        """Delete the ``count`` oldest waiting events, never one handed to the broker (inside the writer's
        transaction); ``count``."""
        db = self._writer
        handed = self._handed
        gone = 0
        for first, last, held in db.execute("SELECT first, last, count FROM batches WHERE last > ? "
                                            "ORDER BY first", (handed,)).fetchall():
            if gone >= count:
                break
            if first > handed and held <= count - gone:
                db.execute("DELETE FROM batches WHERE first = ?", (first,))
                gone += held
                continue
            blob, = db.execute("SELECT events FROM batches WHERE first = ?", (first,)).fetchone()
            events = _unpack(blob, first)
            kept_handed = [row for row in events if row[0] <= handed]
            rest = events[len(kept_handed):]
            cut = min(count - gone, len(rest))
            kept = kept_handed + rest[cut:]
            _rewrite(db, first, kept)
            gone += cut
        return gone

    @staticmethod
    def _trim(db: sqlite3.Connection, first: int, cut: int) -> int:
        """Rewrite the row starting at ``first`` without its ``cut`` oldest events; ``cut``."""
        blob, = db.execute("SELECT events FROM batches WHERE first = ?", (first,)).fetchone()
        _rewrite(db, first, _unpack(blob, first)[cut:])
        return cut

    def read(self, limit: int) -> list[Row]:
        """The next (at most ``limit``, at most ``max_events``) waiting events after those already handed
        out, oldest first; they are the broker's until ``ack`` or ``rewind``."""
        limit = min(limit, self.max_events)
        taken: list[Row] = []
        try:
            with self._lock:
                handed = self._handed
                query = self._reader.execute("SELECT first, events FROM batches WHERE last > ? ORDER BY first",
                                             (handed,))
                for first, blob in query:
                    events = _unpack(blob, first)
                    after = taken[-1][0] if taken else handed
                    if first <= after:  # rows overlap only in a corrupt file: each event once, in order
                        events = [row for row in events if row[0] > after]
                    taken.extend(events[:limit - len(taken)])
                    if len(taken) >= limit:
                        break
                query.close()
                if taken:
                    self._handed = taken[-1][0]
                    self._handed_count += len(taken)
        except (sqlite3.Error, ValueError) as exc:
            raise OutboxError(f"cannot read outbox {self.path}: {exc}", path=str(self.path)) from None
        return taken

    def rewind(self) -> None:
        """Take back the events handed out (their delivery failed): the bound may drop them now, and the
        next read starts again from the oldest waiting."""
        with self._lock:
            self._handed = 0
            self._handed_count = 0

    def ack(self, seq: int, count: int) -> None:
        """The broker accepted every event up to ``seq`` (``count`` of them): forget them."""
        try:
            with self._lock:
                db = self._reader
                with _transaction(db):
                    removed, = db.execute("SELECT coalesce(sum(count), 0) FROM batches WHERE last <= ?",
                                          (seq,)).fetchone()
                    db.execute("DELETE FROM batches WHERE last <= ?", (seq,))
                    cut = db.execute("SELECT first, events FROM batches WHERE first <= ?", (seq,)).fetchone()
                    if cut is not None:  # a row the acknowledged events end inside
                        first, blob = cut
                        inside = sum(1 for row in _unpack(blob, first) if row[0] <= seq)
                        removed += self._trim(db, first, inside)
                    db.execute("INSERT INTO meta VALUES ('delivered', ?) ON CONFLICT(key) DO UPDATE "
                               "SET value = value + excluded.value", (count,))
                self.pending -= removed
                self._handed_count = max(0, self._handed_count - removed)
                self.delivered += count
        except (sqlite3.Error, ValueError) as exc:
            raise OutboxError(f"cannot write outbox {self.path}: {exc}", path=str(self.path)) from None

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            self._reader.close()
