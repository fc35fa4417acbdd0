"""The journal's storage engine alone: append cost per event, replay rate, open time of a big journal.

``python -m bench.journal_engine [--gib 1.0] [--dir DIR]``. No daemon: this
measures the engine the master calls (``daemon/journal/writer.py``) and the reader
(``eventbus/journal/reader.py``), with 100-byte bus frames in batches of 256 (one
bus wake-up). "cold" evicts the journal's files from the page cache first
(posix_fadvise, this journal's files only).
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from eventbus.daemon.journal.writer import Journal
from eventbus.journal.reader import JournalReader

EPOCH = 1_700_000_000_000_000
BATCH = 256


def frames(first: int, count: int, size: int = 100) -> list[tuple[int, bytes]]:
    out = []
    for seq in range(first, first + count):
        head = struct.pack(">QQ", seq, EPOCH) + b"bench/event\x00"
        out.append((seq, head + b"x" * (size - len(head))))
    return out


def evict(directory: Path) -> None:
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bench_append(directory: Path, fsync: str, events: int) -> float:
    """µs per event of ``append`` with 256 x 100-byte frames per call."""
    writer = Journal(directory, 1 << 40, 1e9, fsync)
    writer.open()
    batches = [frames(EPOCH + 1 + n, BATCH) for n in range(0, events, BATCH)]
    started = time.perf_counter()
    for entries in batches:
        writer.append(entries)
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed / (len(batches) * BATCH) * 1e6


def bench_read(reader: JournalReader, after: int = 0) -> tuple[int, float]:
    """Events read to the end from ``after`` in reads of 1000, and events per second."""
    count = 0
    started = time.perf_counter()
    while True:
        got = reader.read(after, 1000)
        count += len(got.events)
        if got.events:
            after = got.events[-1][0]
        if got.at_end:
            break
    return count, count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the big journal for the open test")
    parser.add_argument("--dir", default=None, help="where to build it (default: a temp dir)")
    args = parser.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="jbench"))
    lines = ["| measure | value |", "|---|---|"]
    try:
        for fsync in ("never", "batch", "always"):
            events = 200_000 if fsync != "always" else 20_000
            cost = bench_append(root / f"append-{fsync}", fsync, events)
            lines.append(f"| append, fsync={fsync}, 256 x 100 B per call | {cost:.2f} µs/event |")
            shutil.rmtree(root / f"append-{fsync}")

        big = root / "big"
        target = int(args.gib * (1 << 30))
        writer = Journal(big, target + (64 << 20), 1e9, "never")
        writer.open()
        seq = EPOCH
        template = frames(EPOCH + 1, BATCH)
        started = time.perf_counter()
        needed = target // (100 + 24)
        while seq - EPOCH < needed:
            writer.append([(seq + 1 + n, f) for n, (_, f) in enumerate(template)])
            seq += BATCH
        built = time.perf_counter() - started
        writer.close()
        stats = JournalReader(big).stats()
        lines.append(f"| journal built | {stats.events:,} events, {stats.bytes / (1 << 30):.2f} GiB, "
                     f"{stats.segments} segments in {built:.1f} s |")
        lines.append(f"| bytes on disk per 100-byte event | {stats.bytes / stats.events:.1f} "
                     f"({stats.bytes / stats.events / 100:.2f}x the frame) |")
        for label in ("warm", "cold"):
            if label == "cold":
                evict(big)
            started = time.perf_counter()
            reopened = Journal(big, target + (64 << 20), 1e9, "never")
            last = reopened.open()
            tail = reopened.reader.read(last - 1)
            opened = time.perf_counter() - started
            assert last == seq and tail.events[-1][0] == seq
            reopened.close()
            lines.append(f"| open + read the newest event, {label} page cache | {opened * 1000:.0f} ms |")
        evict(big)
        count, rate = bench_read(JournalReader(big), seq - 1_000_000)
        lines.append(f"| replay {count:,} events (cold), reads of 1000, other-process reader | {rate:,.0f} events/s |")
        count, rate = bench_read(JournalReader(big), seq - 1_000_000)
        lines.append(f"| replay {count:,} events (warm), reads of 1000, other-process reader | {rate:,.0f} events/s |")
        middle = JournalReader(big)
        started = time.perf_counter()
        middle.read(EPOCH + stats.events // 2, 1)
        lines.append(f"| first read in the middle, fresh reader | {(time.perf_counter() - started) * 1000:.1f} ms |")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
