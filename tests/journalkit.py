"""Journal test kit: bus frames and batches, a hand-moved clock, a journal on a test directory, read-everything."""
from __future__ import annotations

import struct
from pathlib import Path

from eventbus.daemon.journal.writer import Journal
from eventbus.journal.reader import JournalReader

EPOCH = 1_700_000_000_000_000
T0 = 1_700_000_000.0


def frame(seq: int, epoch: int = EPOCH, size: int = 100) -> bytes:
    """A bus frame of ``size`` bytes: header (seq, epoch), tag, NUL, payload."""
    head = struct.pack(">QQ", seq, epoch) + b"test/tag\x00"
    return head + (b"%d;" % seq).ljust(size - len(head), b"x")


def batch(first: int, count: int, epoch: int = EPOCH, size: int = 100) -> list[tuple[int, bytes]]:
    return [(seq, frame(seq, epoch, size)) for seq in range(first, first + count)]


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def journal(directory, clock=None, **kwargs) -> Journal:
    options = {"max_bytes": 1 << 30, "max_age": 7 * 86400, "fsync": "never"}
    options.update(kwargs)
    made = Journal(directory, options.pop("max_bytes"), options.pop("max_age"), options.pop("fsync"),
                   clock=clock or Clock(), **options)
    made.open()
    return made


def read_all(reader: JournalReader, after: int = 0, limit: int = 1000):
    """Every event after ``after`` in as many reads as it takes, and the sum of their ``lost``."""
    events, lost = [], 0
    while True:
        got = reader.read(after, limit)
        lost += got.lost
        events += got.events
        if got.events:
            after = got.events[-1][0]
        if got.at_end:
            return events, lost
        assert got.events, "a read that is not at the end returns events"


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jnl"))
