"""The master's journal writer: every bus event on disk before a subscriber gets it, bounded and crash-safe.

``append`` takes one wake-up's ``(seq, frame)`` list in one ``write`` syscall, so events are in the page
cache before they are sent; ``journal_fsync`` decides what a machine crash may lose. A write error never
reaches the bus: the segment is cut back to its last whole record, ``failed`` is set and ``on_error``
called once (the journal logs it only without one), and entries are dropped until ``poll`` starts a new
segment, then ``on_recover``. See docs/journal.md, How it works.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Callable

from eventbus.errors import JournalError
from eventbus.journal.reader import JournalReader
from eventbus.journal.format import (CRC, INDEX_STEP, RECORD_HEAD, SEGMENT_HEADER, SEGMENT_HEADER_SIZE,
                                    SEGMENT_MAGIC, VERSION, Segment, segment_name)
from eventbus.daemon.journal.opening import load_segments
from eventbus.daemon.journal.purge import purge
from eventbus.daemon.journal.sidefiles import write_index

log = logging.getLogger(__name__)

FSYNC_MODES = ("batch", "always", "never")
BATCH_SYNC_INTERVAL = 0.1
MIB = 1024 * 1024


def default_segment_bytes(max_bytes: int) -> int:
    """A sixteenth of the bound, 1 to 16 MiB: small enough that open scans little, big enough to be few."""
    return max(MIB, min(16 * MIB, max_bytes // 16))


class Journal:
    """The writer of one journal directory; single-threaded use (the master's loop)."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int, max_age: float, fsync: str, *,
                 segment_bytes: int | None = None, on_error: Callable[[str], None] | None = None,
                 on_recover: Callable[[], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        if fsync not in FSYNC_MODES:
            raise JournalError(f"journal_fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}",
                               path=str(directory))
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.fsync = fsync
        self._sync_each = fsync == "always"
        self.segment_bytes = segment_bytes or default_segment_bytes(max_bytes)
        self.on_error = on_error
        self.on_recover = on_recover
        self.clock = clock
        self._reader = JournalReader(self.directory)
        self._reader.managed = True
        self._active: Segment | None = None
        self._fd = -1
        self._sizes: dict[int, int] = {}
        self._total = 0
        self._last_seq = 0
        self._last_time = 0
        self._failed: str | None = None
        self._dirty = False
        self._written = threading.Event()  # set when a write makes a clean journal dirty: wakes the sync thread
        self._sync_error: str | None = None
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    # -- public --------------------------------------------------------------------

    @property
    def reader(self) -> JournalReader:
        """A reader that sees everything appended so far."""
        return self._reader

    @property
    def last_seq(self) -> int:
        """The newest seq written (0 for a new journal)."""
        return self._last_seq

    @property
    def failed(self) -> str | None:
        """The current write error, None while writing works."""
        return self._failed

    def open(self) -> int:
        """Create the directory (0700), cut a torn tail, load the segments; return the last seq on disk."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._active, self._fd = load_segments(self.directory, self._reader, self._sizes, self.fsync)
            reader = self._reader
            self._total = sum(self._sizes.values())
            self._last_seq = reader.last_seq()
            self._last_time = max((s.last_time for s in reader.segments if s.last_time is not None), default=0)
        except OSError as exc:
            self._fail(f"cannot open journal {self.directory}: {exc}")
        self._retain(self.clock())
        if self.fsync == "batch" and self._sync_thread is None:
            self._sync_thread = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
            self._sync_thread.start()
        return self._last_seq

    def append(self, entries: list[tuple[int, bytes]]) -> None:
        """Write ``entries`` (seq ascending) in one syscall; entries at or below ``last_seq`` are dropped."""
        if self._failed is not None or not entries:
            return
        last_seq = self._last_seq
        first, last = entries[0][0], entries[-1][0]
        contiguous = first == last_seq + 1 and last - first == len(entries) - 1
        if not contiguous:
            entries = self._newer(entries)
            if not entries:
                return
            first, last = entries[0][0], entries[-1][0]
        segment = self._active
        if segment is None or segment.end >= self.segment_bytes:
            if not self._roll(first):
                return
            segment = self._active
            assert segment is not None
        now = int(self.clock() * 1_000_000)
        if now < self._last_time:
            now = self._last_time
        pack = RECORD_HEAD.pack
        crc_pack = CRC.pack
        crc32 = zlib.crc32
        if len(entries) == 1:  # a quiet bus's wake-up
            frame = entries[0][1]
            # One record (head + frame) and its checksum: one crc32 call.
            record = pack(first, now, len(frame)) + frame
            data = record + crc_pack(crc32(record))
        else:
            chunks: list[bytes] = []
            add = chunks.append
            for seq, frame in entries:
                record = pack(seq, now, len(frame)) + frame
                add(record)
                add(crc_pack(crc32(record)))
            data = b"".join(chunks)
        size = len(data)
        try:
            written = os.write(self._fd, data)
            while written < size:
                written += os.write(self._fd, memoryview(data)[written:])
            if self._sync_each:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._write_failed(segment, exc)
            return
        at = segment.end
        if at - segment.indexed_at >= INDEX_STEP:
            segment.index_seqs.append(first)
            segment.index_times.append(now)
            segment.index_offsets.append(at)
            segment.indexed_at = at
        if segment.first_seq is None:
            segment.first_seq, segment.first_time = first, now
        runs = segment.runs
        if contiguous and runs:
            runs[-1][1] = last
        else:
            segment.learn_runs(entries, last_seq)
        segment.count += len(entries)
        segment.last_seq = self._last_seq = last
        segment.last_time = self._last_time = now
        segment.end = self._sizes[segment.base] = at + size
        self._total += size
        if not self._dirty:
            self._dirty = True
            self._written.set()
        if self._total > self.max_bytes:
            self._retain(None)

    def poll(self) -> None:
        """About once a second: drop segments past ``max_age``, and retry writing after an error."""
        if self._sync_error is not None and self._failed is None:
            self._fail(self._sync_error)
        self._sync_error = None
        if self._failed is not None:
            self._retry()
        self._retain(self.clock())

    def close(self) -> None:
        """Flush and close; fsync unless ``never``; stop the fsync thread."""
        self._stop.set()
        self._written.set()
        if self._sync_thread is not None:
            self._sync_thread.join()
            self._sync_thread = None
        if self._fd >= 0:
            try:
                if self.fsync != "never":
                    os.fdatasync(self._fd)
            except OSError as exc:
                log.warning("cannot sync journal %s on close: %s", self._active and self._active.path, exc)
            os.close(self._fd)
            self._fd = -1

    # -- writing -------------------------------------------------------------------

    def _newer(self, entries: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """The entries above ``last_seq`` and above each other (a re-append after an error overlaps)."""
        newest = self._last_seq
        kept = []
        for entry in entries:
            if entry[0] > newest:
                kept.append(entry)
                newest = entry[0]
        return kept

    def _roll(self, base: int) -> bool:
        """Finish the active segment and start one at ``base``; False (and failed) if that cannot be done."""
        old = self._active
        if old is not None and old.count == 0:
            if old.base <= base:
                return True  # made by a retry (or left by a cut tail) below any seq to come
            self._forget(old)
            os.close(self._fd)
            self._fd = -1
            try:
                os.unlink(old.path)
            except OSError:
                pass
            old = None
        if old is not None:
            try:
                if self.fsync != "never":
                    os.fdatasync(self._fd)
            except OSError as exc:
                self._write_failed(old, exc)
                return False
            write_index(old, old.end)
            os.close(self._fd)
            self._fd = -1
            self._active = None
        problem = self._create(base)
        if problem is not None:
            self._fail(problem)
            return False
        return True

    def _create(self, base: int, probe: int = 0) -> str | None:
        """Start the active segment at ``base``; the error message if that cannot be done.

        A retry ``probe``s for that many free bytes first, so that a disk with
        a few bytes free does not flap between failed and recovered.
        """
        path = str(self.directory / segment_name(base))
        fd = -1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            if os.write(fd, SEGMENT_HEADER.pack(SEGMENT_MAGIC, VERSION, base)) != SEGMENT_HEADER_SIZE:
                raise OSError(errno.ENOSPC, "short write of the segment header")
            if probe:
                try:
                    os.posix_fallocate(fd, SEGMENT_HEADER_SIZE, probe)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                os.ftruncate(fd, SEGMENT_HEADER_SIZE)
            if self.fsync != "never":
                os.fdatasync(fd)
                self._sync_directory()
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                try:
                    os.unlink(path)
                except OSError:
                    pass
            return f"cannot write journal {path}: {exc}"
        segment = Segment(base, path)
        self._fd = fd
        self._active = segment
        self._reader.segments.append(segment)
        self._reader.bases.append(base)
        self._sizes[base] = SEGMENT_HEADER_SIZE
        self._total += SEGMENT_HEADER_SIZE
        return None

    def _forget(self, segment: Segment) -> None:
        reader = self._reader
        position = reader.segments.index(segment)
        del reader.segments[position]
        del reader.bases[position]
        self._total -= self._sizes.pop(segment.base, 0)
        if self._active is segment:
            self._active = None

    def _write_failed(self, segment: Segment, exc: OSError) -> None:
        try:
            os.ftruncate(self._fd, segment.end)
        except OSError:
            pass
        self._fail(f"cannot write journal {segment.path}: {exc}")

    def _fail(self, message: str) -> None:
        if self._failed is not None:
            return
        self._failed = message
        if self.on_error is not None:
            self.on_error(message)
        else:
            log.error("%s", message)

    def _retry(self) -> None:
        """Try a new segment after a write error; when that works, writing resumes."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            return
        for segment in list(self._reader.segments):
            if not os.path.exists(segment.path):
                self._purge(segment)  # the directory was emptied under us: its events are gone
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        old = self._active
        self._active = None
        if old is not None and old.count == 0:
            self._forget(old)
            try:
                os.unlink(old.path)
            except OSError:
                pass
        elif old is not None and old in self._reader.segments:
            write_index(old, old.end)
        if self._create(self._last_seq + 1, probe=min(self.segment_bytes, MIB)) is not None:
            return  # still failing; on_error was called once already
        self._failed = None
        if self.on_recover is not None:
            self.on_recover()

    # -- retention -----------------------------------------------------------------

    def _retain(self, now: float | None) -> None:
        """Delete the oldest finished segments while over ``max_bytes`` or, given ``now``, past ``max_age``."""
        segments = self._reader.segments
        cutoff = None if now is None else int((now - self.max_age) * 1_000_000)
        while len(segments) > 1 and segments[0] is not self._active:
            oldest = segments[0]
            too_old = cutoff is not None and (oldest.last_time is None or oldest.last_time < cutoff)
            if self._total <= self.max_bytes and not too_old:
                return
            self._purge(oldest)

    def _purge(self, segment: Segment) -> None:
        """Delete ``segment``, first noting its runs in ``purged`` so that readers count them as lost."""
        purge(self.directory, self._reader, segment)
        self._forget(segment)

    # -- durability ----------------------------------------------------------------

    def _sync_loop(self) -> None:
        """The ``batch`` mode thread: fdatasync the active segment 0.1 s after a write made it dirty.

        It sleeps while nothing is written (an idle master does not wake ten times a second). The first write
        on a clean journal wakes it; it syncs 0.1 s later, which covers every write until then, so no event
        waits longer than that. ``_written`` is cleared before ``_dirty``: a write in between finds the journal
        dirty and is covered by the sync that follows, and the next one wakes the thread again.
        """
        while True:
            self._written.wait()
            if self._stop.wait(BATCH_SYNC_INTERVAL):
                return
            self._written.clear()
            self._dirty = False
            fd = self._fd
            if fd < 0:
                continue
            try:
                os.fdatasync(fd)
            except OSError as exc:
                if exc.errno not in (errno.EBADF, errno.EINVAL):  # the loop closed it meanwhile
                    self._sync_error = f"cannot sync journal {self.directory}: {exc}"

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

