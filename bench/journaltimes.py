"""The records of a master's journal with the time each was written (the master's append, just before it
published them): where a benchmark reads when an event reached the master bus, with no listener in between.

Reads the segment files directly (``eventbus.journal.format``: a header, then records ``seq, time in µs,
frame length, frame, crc``); a record cut short or failing its checksum ends its segment.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterator

from eventbus.journal import format as journalformat


def records(journal_dir: Path) -> Iterator[tuple[int, float, bytes]]:
    """``(seq, unix time written, frame)`` of every record, oldest segment first (a frame as the bus sent it:
    its header, then ``tag NUL data``; ``eventbus.bus.wire.split_bus_frame``)."""
    head, crc = journalformat.RECORD_HEAD, journalformat.CRC
    for segment in sorted(journal_dir.glob("*" + journalformat.SEGMENT_SUFFIX)):
        if journalformat.segment_base(segment.name) is None:
            continue
        data = segment.read_bytes()
        at = journalformat.SEGMENT_HEADER_SIZE
        while at + journalformat.RECORD_OVERHEAD <= len(data):
            seq, micros, size = head.unpack_from(data, at)
            end = at + journalformat.RECORD_HEAD_SIZE + size
            if end + crc.size > len(data) or crc.unpack_from(data, end)[0] != zlib.crc32(data[at:end]):
                break
            yield seq, micros / 1e6, data[at + journalformat.RECORD_HEAD_SIZE:end]
            at = end + crc.size
