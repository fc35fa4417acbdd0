"""What the journal writer does at open: load the segments on disk, cut a torn tail, index sealed segments
(docs/journal.md, How it works: Crash recovery).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from eventbus.journal.format import (INDEX_SUFFIX, PURGED_NAME, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC, SEGMENT_SUFFIX,
                                    Segment, parse_purged, read_header, segment_base, segment_name)
from eventbus.journal.reader import JournalReader
from eventbus.daemon.journal.sidefiles import write_index

log = logging.getLogger(__name__)


def load_segments(directory: Path, reader: JournalReader, sizes: dict[int, int],
                  fsync: str) -> tuple[Segment | None, int]:
    """Load ``directory``'s segments into ``reader`` and their sizes into ``sizes``; the active segment and fd.

    The last segment, when it holds a record, is the active one, returned with
    a descriptor open for appending; otherwise ``(None, -1)``. An ``OSError``
    rises with what was loaded so far left in ``reader`` and ``sizes``.
    """
    names = os.listdir(directory)
    try:
        reader.purged = parse_purged((directory / PURGED_NAME).read_bytes())
    except FileNotFoundError:
        reader.purged = []
    bases = sorted(base for base in map(segment_base, names) if base is not None)
    if bases and reader.purged and reader.purged[-1][1] >= bases[0]:
        # A crash between writing ``purged`` and deleting the segment: it is still here.
        reader.purged = [run for run in reader.purged if run[1] < bases[0]]
    prev = reader.purged[-1][1] if reader.purged else 0
    active: Segment | None = None
    active_fd = -1
    for number, base in enumerate(bases):
        segment = Segment(base, str(directory / segment_name(base)))
        last = number == len(bases) - 1
        fd = os.open(segment.path, os.O_RDWR if last else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if last:
                if not _recover(segment, fd, size, prev, fsync):
                    os.close(fd)
                    fd = -1
                    continue
                active_fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
                active = segment
                size = segment.end
            elif not _load_sealed(segment, fd, size, prev, names):
                continue
        finally:
            if fd >= 0:
                os.close(fd)
        reader.segments.append(segment)
        reader.bases.append(base)
        sizes[base] = size
        if segment.last_seq is not None:
            prev = segment.last_seq
    return active, active_fd


def _load_sealed(segment: Segment, fd: int, size: int, prev: int, names: list[str]) -> bool:
    """Summarise a finished segment from its .idx, or scan it and write one; False if it is not a segment."""
    index_path = Path(segment.path[:-len(SEGMENT_SUFFIX)] + INDEX_SUFFIX)
    if index_path.name in names and segment.load_index(index_path.read_bytes(), size):
        return True
    if read_header(fd) != segment.base:
        log.warning("journal file %s is not a journal segment; ignoring it", segment.path)
        return False
    problem, _ = segment.scan(fd, prev)
    if problem is not None:
        log.warning("journal segment %s has a corrupt record at offset %d (%s); "
                    "its %d bytes from there are unreadable", segment.path, segment.end, problem,
                    size - segment.end)
    write_index(segment, size)
    return True


def _recover(segment: Segment, fd: int, size: int, prev: int, fsync: str) -> bool:
    """Scan the last segment and cut a torn tail with one log line; False if it is not one to append to.

    A last segment left without a record is deleted: the next append starts
    one named after its own first seq, which may be below this one's name.
    """
    base = read_header(fd)
    if base != segment.base:  # not a segment, a torn header, or a segment of another name (a copy)
        raw = os.pread(fd, len(SEGMENT_MAGIC), 0)
        if base is not None or size >= SEGMENT_HEADER_SIZE or not SEGMENT_MAGIC.startswith(raw):
            log.warning("journal file %s is not a journal segment; ignoring it", segment.path)
            return False
        log.warning("journal segment %s: cut a torn tail at offset 0 (%d bytes: a short header)",
                    segment.path, size)
        os.unlink(segment.path)
        return False
    problem, left = segment.scan(fd, prev)
    if left:
        log.warning("journal segment %s: cut a torn tail at offset %d (%d bytes: %s)",
                    segment.path, segment.end, size - segment.end, problem or "a short record")
        os.ftruncate(fd, segment.end)
        if fsync != "never":
            os.fdatasync(fd)
    if segment.count == 0:
        os.unlink(segment.path)
        return False
    return True
