"""The minion's relay spool: events for the master, on disk, in order, bounded, surviving restarts.

Each event gets the next sequence number of this minion's relay stream;
seqs are contiguous, so the spool is a range ``head+1 .. next_seq-1``:
``head`` is the newest seq that was either acknowledged by the master or
dropped because the spool was full. A fresh spool starts its seqs from the
time in microseconds, so a minion whose spool was wiped still sends seqs
the master has not seen.

On disk: segment files ``seg-<first seq>`` of records ``u32 length, u64 seq,
frame``, and a ``head`` file. Appends are written to the OS before
``append`` returns (a killed minion loses nothing); fsync happens in
``sync()``, which the daemon calls about once a second (the fsync itself on
a thread of its own, ``spoolsync``) and on shutdown, so a machine crash can
lose up to the last second. Recent events are also kept
in memory so sending them costs no disk read.
"""
from __future__ import annotations

import collections
import logging
import os
import struct
import time
from pathlib import Path
from typing import BinaryIO

from eventbus.daemon.link.spoolsync import SpoolSync

log = logging.getLogger(__name__)

RECORD = struct.Struct(">IQ")
SEQ = struct.Struct(">Q")
# Seqs start from the clock in µs (about 2**51) and go up by one: a spool that numbers past this is corrupt
# (and the link's u64 seqs must never run out; segments named up to twice this are read, to see that).
SEQ_LIMIT = 2 ** 62
SEGMENT_BYTES = 8 * 1024 * 1024
MEMORY_EVENTS = 200_000
MAX_FRAME = 256 * 1024 * 1024


def _segment_first(name: str) -> int | None:
    """The first seq of the segment file ``name`` (``seg-`` and 20 digits, as written); ``None`` for other files."""
    digits = name[4:]
    if not name.startswith("seg-") or len(digits) != 20 or not (digits.isascii() and digits.isdigit()):
        return None
    first = int(digits)
    return first if 0 < first < 2 * SEQ_LIMIT else None


class Spool:
    """An on-disk queue of ``(seq, frame)`` holding at most ``max_events``, oldest dropped first."""

    def __init__(self, directory: Path, max_events: int, memory_events: int = MEMORY_EVENTS) -> None:
        self.directory = directory
        self.max_events = max_events
        self.memory_events = memory_events
        self.dropped = 0
        self.dirty = False
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.segments: list[int] = sorted(first for first in map(_segment_first, os.listdir(directory))
                                          if first is not None)
        self._head_fd = os.open(directory / "head", os.O_RDWR | os.O_CREAT, 0o600)
        raw = os.pread(self._head_fd, SEQ.size, 0)
        stored_head = SEQ.unpack(raw)[0] if len(raw) == SEQ.size else None
        if stored_head is not None and stored_head >= SEQ_LIMIT:
            log.warning("spool head file holds seq %d, past any a minion numbers; ignored it", stored_head)
            stored_head = None
        self.next_seq = self._recover_tail(stored_head)
        if self.next_seq > SEQ_LIMIT:
            self._start_afresh()
        if stored_head is None:
            stored_head = self.segments[0] - 1 if self.segments else self.next_seq - 1
        self.head = max(stored_head, (self.segments[0] - 1) if self.segments else self.next_seq - 1)
        self.head = min(self.head, self.next_seq - 1)
        self._write_head()
        self.memory: collections.deque[tuple[int, bytes]] = collections.deque()
        self._cursor: tuple[int, int, int] | None = None  # (segment, offset, seq at offset)
        self._tail: BinaryIO | None = None
        self._tail_size = 0
        self._syncer: SpoolSync | None = None

    def _segment_path(self, first: int) -> Path:
        return self.directory / f"seg-{first:020d}"

    def _recover_tail(self, stored_head: int | None) -> int:
        """The next seq to hand out, after cutting a half-written record off the last segment."""
        if not self.segments:
            if stored_head is not None:
                return stored_head + 1
            return time.time_ns() // 1000 + 1
        last = self.segments[-1]
        path = self._segment_path(last)
        next_seq, good = last, 0
        with open(path, "rb") as segment:
            while True:
                header = segment.read(RECORD.size)
                if len(header) < RECORD.size:
                    break
                length, seq = RECORD.unpack(header)
                # A segment's records are numbered on from its name: any other seq is not what append wrote.
                if length > MAX_FRAME or seq != next_seq or len(segment.read(length)) < length:
                    break
                next_seq, good = seq + 1, segment.tell()
        if good < path.stat().st_size:
            log.warning("spool segment %s ended in a half-written or corrupt record; cut it off", path.name)
            os.truncate(path, good)
        return next_seq

    def _start_afresh(self) -> None:
        """The segments number past ``SEQ_LIMIT``: corrupt, as no minion gets there. Drop them and number
        from the clock again (the master takes a fresh spool's seqs as new)."""
        log.warning("spool %s numbers its events past seq %d, which no minion does: it is corrupt; dropped "
                    "its %d segments and started afresh", self.directory, SEQ_LIMIT, len(self.segments))
        for first in self.segments:
            self._segment_path(first).unlink(missing_ok=True)
        self.segments = []
        self.next_seq = time.time_ns() // 1000 + 1

    def __len__(self) -> int:
        return self.next_seq - 1 - self.head

    # -- writing --------------------------------------------------------------------

    def append(self, frames: list[bytes]) -> int:
        """Queue ``frames`` in order; return how many of the oldest events were dropped to make room."""
        if self._tail is None or self._tail_size >= SEGMENT_BYTES:
            self._rotate()
        tail = self._tail
        assert tail is not None
        pack = RECORD.pack
        memory = self.memory
        seq = self.next_seq
        chunks = []
        for frame in frames:
            chunks.append(pack(len(frame), seq))
            chunks.append(frame)
            memory.append((seq, frame))
            seq += 1
        block = b"".join(chunks)
        tail.write(block)
        tail.flush()
        self._tail_size += len(block)
        self.next_seq = seq
        self.dirty = True
        while len(memory) > self.memory_events:
            memory.popleft()
        excess = len(self) - self.max_events
        if excess > 0:
            self.dropped += excess
            self._advance(self.head + excess)
            return excess
        return 0

    def _rotate(self) -> None:
        if self._tail is not None:
            self._tail.flush()
            os.fsync(self._tail.fileno())
            self._tail.close()
        if not self.segments or self._tail is not None or self._segment_size(self.segments[-1]) >= SEGMENT_BYTES:
            self.segments.append(self.next_seq)
        path = self._segment_path(self.segments[-1])
        self._tail = open(path, "ab")
        self._tail_size = self._tail.tell()

    def _segment_size(self, first: int) -> int:
        try:
            return self._segment_path(first).stat().st_size
        except FileNotFoundError:
            return 0

    # -- acknowledging --------------------------------------------------------------

    def ack(self, seq: int) -> None:
        """The master has everything up to ``seq``: forget it."""
        if seq > self.head:
            self._advance(min(seq, self.next_seq - 1))

    def _advance(self, head: int) -> None:
        self.head = head
        self._write_head()
        memory = self.memory
        while memory and memory[0][0] <= head:
            memory.popleft()
        # A segment is finished with once the next one starts at or below head + 1.
        while len(self.segments) > 1 and self.segments[1] <= head + 1:
            first = self.segments.pop(0)
            self._segment_path(first).unlink(missing_ok=True)
            if self._cursor is not None and self._cursor[0] == first:
                self._cursor = None

    def _write_head(self) -> None:
        os.pwrite(self._head_fd, SEQ.pack(self.head), 0)

    # -- reading --------------------------------------------------------------------

    def read(self, after: int, limit: int, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        """Up to ``limit`` events (about ``max_bytes``) with seq greater than ``after``, oldest first."""
        start = max(after, self.head) + 1
        if start >= self.next_seq:
            return []
        memory = self.memory
        if memory and memory[0][0] <= start:
            index = start - memory[0][0]
            out = []
            size = 0
            for position in range(index, min(len(memory), index + limit)):
                item = memory[position]
                out.append(item)
                size += len(item[1])
                if size >= max_bytes:
                    break
            return out
        return self._read_disk(start, limit, max_bytes)

    def _read_disk(self, start: int, limit: int, max_bytes: int) -> list[tuple[int, bytes]]:
        if self._tail is not None:
            self._tail.flush()
        out: list[tuple[int, bytes]] = []
        size = 0
        index = 0
        for position, first in enumerate(self.segments):
            if first <= start:
                index = position
        while index < len(self.segments) and len(out) < limit and size < max_bytes:
            first = self.segments[index]
            offset, seq_at = 0, first
            cursor = self._cursor
            if cursor is not None and cursor[0] == first and cursor[2] <= start:
                offset, seq_at = cursor[1], cursor[2]
            corrupt = False
            with open(self._segment_path(first), "rb") as segment:
                segment.seek(offset)
                while len(out) < limit and size < max_bytes:
                    header = segment.read(RECORD.size)
                    if len(header) < RECORD.size:
                        break
                    length, seq = RECORD.unpack(header)
                    if seq != seq_at or length > MAX_FRAME:
                        corrupt = True  # records are numbered on from the segment's name, as append wrote them
                        break
                    if seq < start:
                        segment.seek(length, os.SEEK_CUR)
                    else:
                        frame = segment.read(length)
                        if len(frame) < length:
                            break
                        out.append((seq, frame))
                        size += length
                    offset, seq_at = segment.tell(), seq + 1
            self._cursor = (first, offset, seq_at)
            if corrupt and index + 1 < len(self.segments):
                following = self.segments[index + 1]
                self._drop_corrupt(first, offset, seq_at, following - 1)
                index = self.segments.index(following)
                continue
            index += 1
        return out

    def _drop_corrupt(self, first: int, offset: int, seq_at: int, through: int) -> None:
        """A finished segment holds a corrupt record (where ``seq_at`` was due): its events from there on
        cannot be sent. Drop every event up to ``through`` (the segment's last seq), as a full spool drops
        its oldest, so the master takes what follows (a batch's ``floor`` says the minion made that gap)."""
        lost = through - max(self.head, seq_at - 1)
        log.warning("spool segment %s has a corrupt record at offset %d; dropped the events up to seq %d "
                    "(%d still waiting)", self._segment_path(first).name, offset, through, max(lost, 0))
        if lost > 0:
            self.dropped += lost
            self._advance(through)

    # -- durability -----------------------------------------------------------------

    def sync(self) -> None:
        """fsync what was appended and acknowledged since the last sync: on the sync thread once one is
        started (``start_syncing``), else here."""
        if not self.dirty:
            return
        fds = [self._head_fd]
        if self._tail is not None:
            self._tail.flush()
            fds.append(self._tail.fileno())
        self.dirty = False
        if self._syncer is not None:
            self._syncer.request(fds)
            return
        for fd in fds:
            os.fsync(fd)

    def start_syncing(self) -> SpoolSync:
        """Make ``sync`` hand its fsyncs to a thread (the daemon's loop never waits for the disk)."""
        if self._syncer is None:
            self._syncer = SpoolSync()
        return self._syncer

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None
        self.dirty = True
        self.sync()
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        os.close(self._head_fd)
