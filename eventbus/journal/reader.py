"""The event journal's reader: the master's events, replayable by seq or time, from any process.

The format, and what a reader makes of a torn tail or a corrupt record, is in ``eventbus/journal/format.py``;
the writer (the master only) in ``daemon/journal/writer.py``.
"""
from __future__ import annotations

import bisect
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from eventbus.errors import JournalError
from eventbus.journal.format import (CRC, INDEX_SUFFIX, PURGED_NAME, READ_CHUNK, RECORD_HEAD, RECORD_HEAD_SIZE,
                                    RECORD_OVERHEAD, SEGMENT_HEADER_SIZE, SEGMENT_SUFFIX, Segment, epoch_of,
                                    lost_in_purged, parse_purged, read_header, segment_base, segment_name)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class JournalStats:
    """What a journal holds now (times in unix seconds)."""

    first_seq: int | None
    last_seq: int | None
    first_time: float | None
    last_time: float | None
    events: int
    bytes: int
    segments: int


@dataclass
class JournalRead:
    """One read: ``events`` after ``after``, ``lost`` the ones before them that are gone for good."""

    events: list[tuple[int, bytes]]
    lost: int
    at_end: bool


class JournalReader:
    """Reads a journal directory by seq or time; safe while the master writes it, in any process."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        self.purged: list[tuple[int, int, int]] = []
        self.managed = False  # True when the writer in this process keeps the state up to date
        self._purged_file: list[tuple[int, int, int]] = []
        self._purged_stamp: tuple[int, int] | None = None
        self._complained: set[tuple[str, int]] = set()

    # -- public ------------------------------------------------------------------

    def read(self, after: int, limit: int = 1000, max_bytes: int = 4 << 20) -> JournalRead:
        """Up to ``limit`` events (about ``max_bytes``) with seq > ``after``, oldest first, and what is gone."""
        self._refresh()
        segments = self.segments
        position = max(0, bisect.bisect_right(self.bases, after) - 1)
        while position < len(segments) and (segments[position].last_seq or 0) <= after:
            position += 1
        out: list[tuple[int, bytes]] = []
        lost = 0
        if position == len(segments):
            return JournalRead(out, lost_in_purged(self.purged, after), True)
        lost = lost_in_purged(self.purged, after)
        prev = self._seq_before(position)
        budget = [max(1, limit), max_bytes]
        stopped = False
        while position < len(segments) and not stopped:
            segment = segments[position]
            if segment.count:
                prev, lost, stopped = self._read_segment(segment, after, prev, out, lost, budget)
            position += 1
        at_end = not stopped or (bool(out) and out[-1][0] >= self.last_seq())
        return JournalRead(out, lost, at_end)

    def seq_before_time(self, when: float) -> int:
        """An ``after`` whose read starts at the first record appended at or after ``when`` (unix s).

        0 when no retained record is older (read everything, with what was purged as lost).
        """
        self._refresh()
        target = int(when * 1_000_000)
        for position, segment in enumerate(self.segments):
            if not segment.count or segment.last_time < target:
                continue
            if segment.first_time >= target:
                older = any(s.count for s in self.segments[:position])
                return segment.first_seq - 1 if older else 0
            start = max(0, bisect.bisect_left(segment.index_times, target) - 1)
            offset = segment.index_offsets[start] if segment.index_times else SEGMENT_HEADER_SIZE
            for seq, stamp in self._headers(segment, offset):
                if stamp >= target:
                    return seq - 1
            return segment.last_seq
        return self.last_seq()

    def stats(self) -> JournalStats:
        """Counts, bounds and size of what the journal holds now."""
        self._refresh()
        full = [s for s in self.segments if s.count]
        size = 0
        for segment in self.segments:
            try:
                size += os.stat(segment.path).st_size
            except FileNotFoundError:
                pass
        return JournalStats(
            first_seq=full[0].first_seq if full else None, last_seq=full[-1].last_seq if full else None,
            first_time=full[0].first_time / 1e6 if full else None,
            last_time=full[-1].last_time / 1e6 if full else None,
            events=sum(s.count for s in full), bytes=size, segments=len(self.segments))

    def last_seq(self) -> int:
        """The newest seq the journal ever held (0 when empty)."""
        if not self.managed:
            self._refresh()
        for segment in reversed(self.segments):
            if segment.last_seq is not None:
                return segment.last_seq
        return self.purged[-1][1] if self.purged else 0

    # -- reading records ----------------------------------------------------------

    def _seq_before(self, position: int) -> int:
        for segment in reversed(self.segments[:position]):
            if segment.last_seq is not None:
                return segment.last_seq
        return self.purged[-1][1] if self.purged else 0

    def _read_segment(self, segment: Segment, after: int, prev: int, out: list[tuple[int, bytes]],
                      lost: int, budget: list[int]) -> tuple[int, int, bool]:
        """Append ``segment``'s events after ``after`` to ``out``; return (prev, lost, stop reading)."""
        start = bisect.bisect_right(segment.index_seqs, after) - 1
        offset = segment.index_offsets[start] if start >= 0 else SEGMENT_HEADER_SIZE
        end = segment.end
        last = segment.last_seq if segment.last_seq is not None else 2 ** 64
        unpack = RECORD_HEAD.unpack_from
        crc_at = CRC.unpack_from
        crc32 = zlib.crc32
        append = out.append
        limit, max_bytes = budget
        try:
            fd = os.open(segment.path, os.O_RDONLY)
        except FileNotFoundError:
            return prev, lost, False
        try:
            while offset < end:
                buf = os.pread(fd, min(max(READ_CHUNK, RECORD_OVERHEAD + 1), end - offset), offset)
                if not buf:
                    break
                size = len(buf)
                if size >= RECORD_HEAD_SIZE:
                    need = RECORD_OVERHEAD + unpack(buf, 0)[2]
                    if need > size and offset + need <= end:
                        buf = os.pread(fd, need, offset)
                        size = len(buf)
                view = memoryview(buf)
                i = 0
                while i + RECORD_HEAD_SIZE <= size:
                    seq, _, length = unpack(buf, i)
                    stop = i + RECORD_OVERHEAD + length
                    if stop > size and offset + stop <= end:
                        break  # whole, but past this chunk
                    if stop > size or crc32(view[i:stop - 4]) != crc_at(buf, stop - 4)[0] \
                            or seq <= prev or seq > last:  # out of order behind a good checksum: corrupt too
                        self._complain(segment, offset + i)
                        view.release()
                        return prev, lost, False
                    if seq > after:
                        if seq != prev + 1:
                            epoch = epoch_of(seq, buf[i + RECORD_HEAD_SIZE:i + RECORD_HEAD_SIZE + min(16, length)])
                            missing = seq - 1 - max(prev, after, epoch)
                            if missing > 0:
                                if out:
                                    view.release()
                                    return prev, lost, True
                                lost += missing
                        if len(out) >= limit or max_bytes <= 0:
                            view.release()
                            return prev, lost, True
                        append((seq, buf[i + RECORD_HEAD_SIZE:stop - 4]))
                        max_bytes -= length
                        budget[1] = max_bytes
                    prev = seq
                    i = stop
                view.release()
                if i == 0:
                    self._complain(segment, offset)  # the valid part cannot end inside a record
                    break
                offset += i
        finally:
            os.close(fd)
        return prev, lost, False

    def _headers(self, segment: Segment, offset: int) -> Iterator[tuple[int, int]]:
        """(seq, time) of the records of ``segment`` from ``offset`` on (checksums not checked)."""
        with open(segment.path, "rb") as stream:
            stream.seek(offset)
            while stream.tell() < segment.end:
                head = stream.read(RECORD_HEAD_SIZE)
                if len(head) < RECORD_HEAD_SIZE:
                    return
                seq, stamp, length = RECORD_HEAD.unpack(head)
                yield seq, stamp
                stream.seek(length + 4, os.SEEK_CUR)

    def _complain(self, segment: Segment, offset: int) -> None:
        """Log a corrupt record once per reader: the rest of its segment cannot be read."""
        key = (segment.path, offset)
        if key not in self._complained:
            self._complained.add(key)
            log.error("journal segment %s has a corrupt record at offset %d; skipping the rest of it",
                      segment.path, offset)

    # -- following the directory ---------------------------------------------------

    def _refresh(self) -> None:
        """Catch up with what the writer did since the last call (another process's writer)."""
        if self.managed:
            return
        self._load_purged()  # before listing: a segment being purged is then counted once, not twice
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            raise JournalError(f"no journal at {self.directory}", path=str(self.directory)) from None
        except NotADirectoryError:
            raise JournalError(f"{self.directory} is not a journal directory", path=str(self.directory)) from None
        known = {s.base: s for s in self.segments}
        bases = sorted(base for base in map(segment_base, names) if base is not None)
        segments = []
        prev = 0  # only orders the scan of a segment nothing precedes; lost counts come from purged
        for number, base in enumerate(bases):
            segment = known.get(base) or Segment(base, str(self.directory / segment_name(base)))
            last = number == len(bases) - 1
            if not segment.complete:
                try:
                    self._catch_up(segment, prev, sealed=not last, names=names)
                except FileNotFoundError:
                    continue
            segments.append(segment)
            if segment.last_seq is not None:
                prev = segment.last_seq
        self.segments = segments
        self.bases = [s.base for s in segments]
        self.purged = self._purged_file
        if segments and self.purged and self.purged[-1][1] >= segments[0].base:
            self.purged = [run for run in self.purged if run[1] < segments[0].base]  # noted, not yet deleted

    def _catch_up(self, segment: Segment, prev: int, *, sealed: bool, names: list[str]) -> None:
        """Learn the records of ``segment`` not known yet, from its .idx when it has a valid one."""
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            file_size = os.fstat(fd).st_size
            index_name = segment_name(segment.base)[:-len(SEGMENT_SUFFIX)] + INDEX_SUFFIX
            if sealed and index_name in names:
                try:
                    raw = (self.directory / index_name).read_bytes()
                except FileNotFoundError:
                    raw = b""
                if segment.load_index(raw, file_size):
                    return
            if segment.end == SEGMENT_HEADER_SIZE and read_header(fd) != segment.base:
                segment.end = file_size  # not a segment (yet), or another one's copy: nothing to read in it
                return
            if file_size > segment.end:
                problem, _ = segment.scan(fd, prev, until=file_size)
                if problem is not None and sealed:
                    self._complain(segment, segment.end)
        finally:
            os.close(fd)

    def _load_purged(self) -> None:
        path = self.directory / PURGED_NAME
        try:
            info = os.stat(path)
        except FileNotFoundError:
            self._purged_file, self._purged_stamp = [], None
            return
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._purged_stamp:
            self._purged_file = parse_purged(path.read_bytes())
            self._purged_stamp = stamp
