"""The event journal's on-disk format: segments, records, indexes and the purged list (no policy here).

One directory, written only by the master daemon (``daemon/journal/writer.py``), read
by anyone, also while it is being written. All integers are big-endian.

- ``<base:020d>.jnl``, a segment: a 16-byte header ``b"EBJNL\\0"``, u16
  version (1), u64 base, then records. ``base`` is at most the seq of the
  segment's first record and above every seq of the segments before it, so a
  binary search on the names finds the segment of a seq. A record is
  ``u64 seq, u64 time (unix µs, never decreasing), u32 length, frame,
  u32 crc32`` of everything before the crc: 24 bytes beyond the bus frame.
- ``<base:020d>.idx``, written when a segment is finished (the writer moves to
  a new one): the segment's size, record count, first/last seq and time, a
  sparse index ``(seq, time, offset)`` about every ``INDEX_STEP`` bytes and its
  runs (below), then a crc32. A segment without a valid one (the active
  segment, or a crash just after a roll) is scanned record by record.
- ``purged``: what retention deleted, as ``(first_seq, last_seq, count)`` runs
  (at most ``PURGED_MAX``, the oldest merged), so ``lost`` stays exact.

Frames are bus frames (``eventbus/bus/wire.py``): bytes 8..16 hold the epoch, the
seq the daemon run started from. A *run* is the seqs ``epoch+1 .. last`` of
one daemon run: every seq in it existed, so a seq missing inside a run (not
written while the disk was full) counts as lost, while the jump to a new
epoch (a restart) loses nothing.

A reader treats a short or not yet checksummed record at the end of the last
segment as the end of the journal (the writer may be in the middle of it);
only the writer's ``open`` cuts a torn tail. A corrupt record inside an older
segment ends the reading of that segment with one log line.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib


log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"EBJNL\x00"
VERSION = 1
SEGMENT_HEADER = struct.Struct(">6sHQ")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size
RECORD_HEAD = struct.Struct(">QQI")  # seq, time in µs, frame length
RECORD_HEAD_SIZE = RECORD_HEAD.size
CRC = struct.Struct(">I")
RECORD_OVERHEAD = RECORD_HEAD_SIZE + CRC.size
MAX_FRAME = 256 * 1024 * 1024
# Seqs start from the clock in µs (about 2**51) and go up by one: a seq past this on disk is corrupt (the
# bus numbers on from the journal's last seq, and its frames hold seqs as u64).
SEQ_LIMIT = 2 ** 62
INDEX_STEP = 64 * 1024
READ_CHUNK = 1 << 20

INDEX_MAGIC = b"EBIDX\x00"
# magic, version, segment size, count, first/last seq, first/last time, index entries, runs
INDEX_HEADER = struct.Struct(">6sHQQQQQQII")
INDEX_ENTRY = struct.Struct(">QQQ")
RUN = struct.Struct(">QQQ")  # first seq, last seq, count
PURGED_MAGIC = b"EBPRG\x00\x00\x01"
PURGED_MAX = 4096

SEGMENT_SUFFIX = ".jnl"
INDEX_SUFFIX = ".idx"
PURGED_NAME = "purged"


def segment_name(base: int) -> str:
    """The file name of the segment whose base seq is ``base``."""
    return f"{base:020d}{SEGMENT_SUFFIX}"


def segment_base(name: str) -> int | None:
    """The base seq of the segment file ``name``; ``None`` for any other name (a file that is no segment,
    e.g. one a person left there, is not read, and two names never stand for one base)."""
    stem = name[:-len(SEGMENT_SUFFIX)]
    if not name.endswith(SEGMENT_SUFFIX) or len(stem) != 20 or not (stem.isascii() and stem.isdigit()):
        return None
    base = int(stem)
    return base if base <= SEQ_LIMIT else None


def epoch_of(seq: int, frame: bytes) -> int:
    """The epoch (run start) of a bus frame; a frame too short to be one starts its own run."""
    if len(frame) >= 16:
        return int.from_bytes(frame[8:16], "big")
    return seq - 1


class Segment:
    """What is known of one segment file: its valid length, counts, sparse index and runs."""

    __slots__ = ("base", "path", "end", "count", "first_seq", "last_seq", "first_time", "last_time",
                 "index_seqs", "index_times", "index_offsets", "indexed_at", "runs", "complete")

    def __init__(self, base: int, path: str) -> None:
        self.base = base
        self.path = path
        self.end = SEGMENT_HEADER_SIZE  # the offset after the last valid record known
        self.count = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.first_time: int | None = None
        self.last_time: int | None = None
        self.index_seqs: list[int] = []
        self.index_times: list[int] = []
        self.index_offsets: list[int] = []
        self.indexed_at = -INDEX_STEP
        self.runs: list[list[int]] = []  # [start_exclusive, last]: every seq in between existed
        self.complete = False  # read from a valid .idx: nothing more to scan

    def new_run(self, seq: int, prev: int, frame: bytes) -> None:
        """Learn ``seq`` (of bus frame ``frame``, its first 16 bytes at least), which does not follow ``prev``:
        one more run, unless ``frame``'s epoch shows no event between them was ever numbered."""
        start = max(prev, epoch_of(seq, frame))
        if self.runs and start <= prev:
            self.runs[-1][1] = seq
        else:
            self.runs.append([min(start, seq - 1), seq])

    def learn_runs(self, entries: list[tuple[int, bytes]], prev: int) -> None:
        """Extend the runs by ``entries`` (seq ascending, after ``prev``), not all contiguous."""
        runs = self.runs
        for seq, frame in entries:
            if seq != prev + 1 or not runs:
                self.new_run(seq, prev, frame)
            else:
                runs[-1][1] = seq
            prev = seq

    def scan(self, fd: int, prev: int, *, until: int | None = None) -> tuple[str | None, int]:
        """Walk the records from ``end`` on, learning them; return (the problem that stopped it, bytes left).

        ``prev`` is the seq before this segment's next record. The problem is
        None at a clean end or a short last record (the bytes left say which).
        """
        pos = self.end
        buf = b""
        buf_at = pos
        unpack = RECORD_HEAD.unpack_from
        crc_at = CRC.unpack_from
        crc32 = zlib.crc32
        if self.last_seq is not None:
            prev = self.last_seq
        while True:
            want = READ_CHUNK if until is None else min(READ_CHUNK, until - buf_at - len(buf))
            more = os.pread(fd, want, buf_at + len(buf)) if want > 0 else b""
            if not more:
                return None, len(buf) - (pos - buf_at)
            buf = buf[pos - buf_at:] + more
            buf_at = pos
            view = memoryview(buf)
            size = len(buf)
            i = 0
            problem = None
            while i + RECORD_HEAD_SIZE <= size:
                seq, when, length = unpack(buf, i)
                if length > MAX_FRAME:
                    problem = f"a record length of {length} bytes"
                    break
                stop = i + RECORD_HEAD_SIZE + length + 4
                if stop > size:
                    break
                if crc32(view[i:stop - 4]) != crc_at(buf, stop - 4)[0]:
                    problem = "a bad checksum"
                    break
                if seq <= prev or seq > SEQ_LIMIT or (self.last_time is not None and when < self.last_time):
                    problem = (f"seq {seq} after {prev}" if seq <= prev else
                               f"seq {seq} past the limit" if seq > SEQ_LIMIT else "a time going backwards")
                    break
                at = buf_at + i
                if self.first_seq is None:
                    self.first_seq, self.first_time = seq, when
                if at - self.indexed_at >= INDEX_STEP:
                    self.index_seqs.append(seq)
                    self.index_times.append(when)
                    self.index_offsets.append(at)
                    self.indexed_at = at
                if seq != prev + 1 or not self.runs:
                    self.new_run(seq, prev, buf[i + RECORD_HEAD_SIZE:i + RECORD_HEAD_SIZE + min(16, length)])
                else:
                    self.runs[-1][1] = seq
                self.count += 1
                self.last_seq, self.last_time = seq, when
                prev = seq
                i = stop
            view.release()
            pos = buf_at + i
            self.end = pos
            if problem is not None:
                return problem, size - i

    # -- the .idx file ----------------------------------------------------------

    def index_bytes(self, file_size: int) -> bytes:
        """The .idx contents describing this (finished) segment of ``file_size`` bytes."""
        parts = [INDEX_HEADER.pack(INDEX_MAGIC, VERSION, file_size, self.count, self.first_seq or 0,
                                   self.last_seq or 0, self.first_time or 0, self.last_time or 0,
                                   len(self.index_seqs), len(self.runs))]
        parts += [INDEX_ENTRY.pack(*e) for e in zip(self.index_seqs, self.index_times, self.index_offsets)]
        parts += [RUN.pack(start + 1, last, last - start) for start, last in self.runs]
        body = b"".join(parts)
        return body + CRC.pack(zlib.crc32(body))

    def load_index(self, raw: bytes, file_size: int) -> bool:
        """Take the summary from .idx contents; False (and nothing changed) if they do not fit the file."""
        if len(raw) < INDEX_HEADER.size + 4 or zlib.crc32(raw[:-4]) != CRC.unpack_from(raw, len(raw) - 4)[0]:
            return False
        magic, version, size, count, first, last, first_time, last_time, entries, runs = \
            INDEX_HEADER.unpack_from(raw)
        if magic != INDEX_MAGIC or version != VERSION or size != file_size or last > SEQ_LIMIT:
            return False
        if len(raw) != INDEX_HEADER.size + entries * INDEX_ENTRY.size + runs * RUN.size + 4:
            return False
        at = INDEX_HEADER.size
        table = list(INDEX_ENTRY.iter_unpack(raw[at:at + entries * INDEX_ENTRY.size]))
        at += entries * INDEX_ENTRY.size
        self.index_seqs = [e[0] for e in table]
        self.index_times = [e[1] for e in table]
        self.index_offsets = [e[2] for e in table]
        self.runs = [[f - 1, l] for f, l, _ in RUN.iter_unpack(raw[at:at + runs * RUN.size])]
        self.end, self.count = size, count
        if count:
            self.first_seq, self.last_seq, self.first_time, self.last_time = first, last, first_time, last_time
        self.complete = True
        return True


def read_header(fd: int) -> int | None:
    """The base seq in a segment's header; None if the file is too short or not a segment. A segment is
    only the one its name says when the two bases agree (``segment_base``)."""
    raw = os.pread(fd, SEGMENT_HEADER_SIZE, 0)
    if len(raw) < SEGMENT_HEADER_SIZE:
        return None
    magic, version, base = SEGMENT_HEADER.unpack(raw)
    if magic != SEGMENT_MAGIC or version != VERSION:
        return None
    return base


def parse_purged(raw: bytes) -> list[tuple[int, int, int]]:
    """The (first, last, count) runs of a ``purged`` file; empty when it is not one."""
    if not raw.startswith(PURGED_MAGIC) or len(raw) < len(PURGED_MAGIC) + 4:
        return []
    body = raw[:-4]
    if zlib.crc32(body) != CRC.unpack_from(raw, len(raw) - 4)[0] or (len(body) - len(PURGED_MAGIC)) % RUN.size:
        log.warning("journal purged file is corrupt; lost counts may be low")
        return []
    return list(RUN.iter_unpack(body[len(PURGED_MAGIC):]))


def purged_bytes(runs: list[tuple[int, int, int]]) -> bytes:
    """The contents of a ``purged`` file holding ``runs``."""
    body = PURGED_MAGIC + b"".join(RUN.pack(*run) for run in runs)
    return body + CRC.pack(zlib.crc32(body))


def lost_in_purged(runs: list[tuple[int, int, int]], after: int) -> int:
    """How many purged events have a seq greater than ``after``."""
    lost = 0
    for first, last, count in reversed(runs):
        if last <= after:
            break
        lost += count if first > after else min(count, last - after)
    return lost
