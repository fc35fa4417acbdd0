"""What the daemons read back from their own disk, corrupted: the journal, the relay spool, a forwarder's outbox.

An input is a directory's files (``core.messages``: each message
``[name, contents]``, or ``[name + b"!", contents]`` to have the harness
make the checksums right, so that a corrupt structure behind a valid
checksum is reached too). The real code opens it as a daemon would at a
start, then serves and appends. Allowed: the documented errors
(``JournalError``, ``OutboxError``) and refusing or dropping what is
corrupt; not allowed: any other exception, losing an event appended after
the open, or writing outside the directory.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Iterator

import msgpack

from eventbus.daemon.journal.writer import Journal
from eventbus.daemon.link.spool import RECORD, SEQ, Spool
from eventbus.journal import format as jf
from eventbus.forwarding import outbox as outbox_module
from eventbus.journal.reader import JournalReader
from eventbus.forwarding.outbox import Outbox
from tests.fuzz import core

FIX = b"!"
BUS_FRAME = b"\x00" * 16 + b"t\x00\x80"


def _entries(data: bytes) -> list[tuple[bytes, bytes, bool]]:
    """(name, contents, fix checksums) of each file of an input."""
    out = []
    for frames in core.messages(data)[:8]:
        name, contents = frames[0], b"".join(frames[1:])
        fix = name.endswith(FIX)
        out.append((name[:-1] if fix else name, contents, fix))
    return out


def _write(directory: Path, name: bytes, contents: bytes) -> None:
    """Write a file whose name came from the input (a single name, made safe for this directory)."""
    name = name.replace(b"/", b"_").replace(b"\x00", b"_")[:200] or b"_"
    if name in (b".", b".."):
        name = b"_"
    with open(os.path.join(os.fsencode(directory), name), "wb") as out:
        out.write(contents)


def _reset(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)


# -- the journal ---------------------------------------------------------------------------------


def _fix_segment(raw: bytes) -> bytes:
    """``raw`` with every whole record's crc32 made right (the header left as it is)."""
    out = bytearray(raw)
    pos = jf.SEGMENT_HEADER_SIZE
    while pos + jf.RECORD_HEAD_SIZE <= len(out):
        length = jf.RECORD_HEAD.unpack_from(out, pos)[2]
        stop = pos + jf.RECORD_OVERHEAD + length
        if length > jf.MAX_FRAME or stop > len(out):
            break
        out[stop - 4:stop] = jf.CRC.pack(zlib.crc32(out[pos:stop - 4]))
        pos = stop
    return bytes(out)


def _fix_tail_crc(raw: bytes) -> bytes:
    return raw[:-4] + jf.CRC.pack(zlib.crc32(raw[:-4])) if len(raw) >= 4 else raw


def journal_files(directory: Path, data: bytes) -> None:
    """Write the journal directory an input describes: segments, indexes, the purged file, other names."""
    for name, contents, fix in _entries(data):
        if fix:
            contents = _fix_segment(contents) if name.endswith(jf.SEGMENT_SUFFIX.encode()) else _fix_tail_crc(contents)
        _write(directory, name, contents)


def check_journal(directory: Path, data: bytes) -> None:
    _reset(directory)
    journal_files(directory, data)
    reader = JournalReader(directory)
    stats = core.only_documented(reader.stats, "the journal reader's stats")
    if isinstance(stats, Exception):
        return
    first = stats.first_seq or 0
    for after in {0, max(0, first - 1), first, first + 1, stats.last_seq or 0}:
        _check_read(core.only_documented(lambda: reader.read(after, 50), "a journal read"), after)
    core.only_documented(lambda: reader.seq_before_time((stats.first_time or 0) + 0.5), "seq_before_time")
    writer = Journal(directory, 1 << 20, 3600.0, "never")
    try:
        last = core.only_documented(writer.open, "the journal writer's open")
        if isinstance(last, Exception) or writer.failed:
            return
        seq = last + 1
        frame = struct.pack(">QQ", seq, seq - 1) + b"t\x00\x80"
        core.only_documented(lambda: writer.append([(seq, frame)]), "a journal append")
        core.only_documented(writer.poll, "the journal writer's poll")
        if writer.failed:
            return
    finally:
        writer.close()
    read = core.only_documented(lambda: JournalReader(directory).read(last, 10), "a read after the append")
    if isinstance(read, Exception) or (seq, frame) not in read.events:
        raise core.Finding(f"an event appended to a reopened journal cannot be read back: {read}")


def _check_read(read, after: int) -> None:
    if isinstance(read, Exception):
        return
    seqs = [seq for seq, _ in read.events]
    if any(seq <= after for seq in seqs) or seqs != sorted(set(seqs)) or read.lost < 0:
        raise core.Finding(f"a journal read after {after} gave seqs {seqs[:10]} and lost {read.lost}")


@core.target("journal", "eventbus.journal reader + format + the eventbus.daemon.journal writer's open on arbitrary "
                        "segment, index and purged files",
             max_len=65536, per_input=5.0, seeds=lambda: journal_seeds(),
             words=(jf.SEGMENT_MAGIC, jf.INDEX_MAGIC, jf.PURGED_MAGIC, b".jnl", b".idx", b"purged",
                    b"00000000000000000001", b"\x00\x01", b"\xff\xff\xff\xff", FIX, core.MESSAGE_MARK,
                    core.FRAME_MARK))
def journal() -> Iterator[core.OneInput]:
    with core.guarded("journal") as (box, watcher):
        yield core.checked(lambda data: check_journal(box.inside / "j", data), watcher, box)


def journal_seeds() -> list[bytes]:
    """Journal directories the writer makes: one segment, a rolled one with its index, a purged file."""
    seeds = []
    root = core.sandbox_root("journal-seeds")
    for segment_bytes, count in ((None, 3), (1 << 20, 40)):
        shutil.rmtree(root, ignore_errors=True)
        writer = Journal(root, 4 << 20, 3600.0, "never", segment_bytes=segment_bytes, clock=lambda: 1_780_000_000.0)
        writer.open()
        base = 1_000_000
        for n in range(count):
            seq = base + n + (5 if n > count // 2 else 0)
            writer.append([(seq, struct.pack(">QQ", seq, base) + b"tag/%d\x00\x81\xa1n\x01" % n)])
            if segment_bytes and n % 10 == 9:
                writer._roll(seq + 1)
        writer._purge(writer.reader.segments[0]) if len(writer.reader.segments) > 2 else None
        writer.close()
        files = [[name.encode(), (root / name).read_bytes()] for name in sorted(os.listdir(root))]
        seeds.append(core.join(files))
        seeds.append(core.join([[name + FIX, contents] for name, contents in files]))
    shutil.rmtree(root, ignore_errors=True)
    return seeds


# -- the relay spool -------------------------------------------------------------------------------


def check_spool(directory: Path, data: bytes) -> None:
    _reset(directory)
    for name, contents, _ in _entries(data):
        _write(directory, name, contents)
    spool = core.only_documented(lambda: Spool(directory, 20, memory_events=5), "opening a spool")
    if isinstance(spool, Exception):
        return
    try:
        head, next_seq = spool.head, spool.next_seq
        if not head < next_seq or len(spool) < 0:
            raise core.Finding(f"a reopened spool has head {head} and next seq {next_seq}")
        _check_spool_read(spool.read(head, 100), head)
        frames = [b"t\x00\x81\xa1n%c" % n for n in range(3)]
        core.only_documented(lambda: spool.append(frames), "appending to a reopened spool")
        got = spool.read(spool.next_seq - 4, 100)
        _check_spool_read(got, spool.next_seq - 4)
        if [frame for _, frame in got[-3:]] != frames:
            raise core.Finding(f"events appended to a reopened spool do not read back: {got[-3:]}")
        spool.ack(spool.next_seq - 2)
        _check_spool_read(spool.read(0, 100), spool.head)
    finally:
        spool.close()
    again = core.only_documented(lambda: Spool(directory, 20), "reopening the spool")
    if not isinstance(again, Exception):
        if again.head != spool.head or again.next_seq != spool.next_seq:
            raise core.Finding(f"a spool reopened at head {again.head}, next {again.next_seq}; "
                               f"it was closed at {spool.head}, {spool.next_seq}")
        again.close()


def _check_spool_read(got: list[tuple[int, bytes]], after: int) -> None:
    seqs = [seq for seq, _ in got]
    if any(seq <= after for seq in seqs) or seqs != sorted(set(seqs)):
        raise core.Finding(f"a spool read after {after} gave seqs {seqs[:10]}")


@core.target("spool", "eventbus.daemon.link.spool: a minion's relay spool reopened on arbitrary head and segment files, "
                      "then appended to, read and acknowledged",
             max_len=16384, per_input=5.0, seeds=lambda: spool_seeds(),
             words=(b"head", b"seg-00000000000000001000", b"seg-", b"\x00\x00\x00\x03", b"\xff" * 8,
                    core.MESSAGE_MARK, core.FRAME_MARK))
def spool() -> Iterator[core.OneInput]:
    with core.guarded("spool") as (box, watcher):
        yield core.checked(lambda data: check_spool(box.inside / "s", data), watcher, box)


def spool_seeds() -> list[bytes]:
    """Spools a minion leaves: events waiting, some acknowledged, a torn last record."""
    seeds = []
    root = core.sandbox_root("spool-seeds")
    for count, acked, torn in ((5, 0, False), (12, 7, False), (4, 1, True)):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        (root / "head").write_bytes(SEQ.pack(1_780_000_000_000_000))  # numbering from a fixed seq, not the clock
        spool = Spool(root, 10)
        spool.append([b"t\x00\x81\xa1n%c" % n for n in range(count)])
        spool.ack(spool.head + acked)
        spool.close()
        files = [[p.name.encode(), p.read_bytes()] for p in sorted(root.iterdir())]
        if torn:
            files[-1][1] += RECORD.pack(100, 5)[:7]
        seeds.append(core.join(files))
    seeds.append(core.join([[b"head", SEQ.pack(2 ** 64 - 1)]]))
    shutil.rmtree(root, ignore_errors=True)
    return seeds


# -- a forwarder's outbox ----------------------------------------------------------------------------


def outbox_file(path: Path, data: bytes) -> None:
    """The outbox file an input describes: its raw bytes (name ``raw``), or rows of a real database.

    A row message is ``[b"batch", first, last, count, blob]`` (integers as decimal text) or
    ``[b"meta", key, value]`` or ``[b"events", seq, tag, blob]`` (the old one-row-per-event table).
    """
    entries = core.messages(data)[:16]
    if entries and entries[0][0] == b"raw":
        path.write_bytes(b"".join(entries[0][1:]))
        return
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.executescript(outbox_module._SCHEMA)
        for frames in entries:
            kind, fields = frames[0], frames[1:]
            try:
                if kind == b"batch" and len(fields) == 4:
                    db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?)",
                               (*(_number(f) for f in fields[:3]), fields[3]))
                elif kind == b"meta" and len(fields) == 2:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               (fields[0].decode(errors="replace"), _number(fields[1])))
                elif kind == b"events" and len(fields) == 3:
                    db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, tag TEXT, data BLOB)")
                    db.execute("INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                               (_number(fields[0]), fields[1].decode(errors="replace"), fields[2]))
            except sqlite3.Error:
                pass
    finally:
        db.close()


def _number(raw: bytes) -> int:
    try:
        value = int(raw)
    except ValueError:
        return len(raw)
    return max(-(2 ** 63), min(2 ** 63 - 1, value))


def check_outbox(directory: Path, data: bytes) -> None:
    _reset(directory)
    path = directory / "b.outbox"
    outbox_file(path, data)
    box = core.only_documented(lambda: Outbox(path, 20), "opening an outbox")
    if isinstance(box, Exception):
        return
    try:
        core.only_documented(lambda: box.read(8), "an outbox read")
        newest = max(box._newest, box.intake or 0, 0)
        rows = [(newest + n + 1, f"t/{n}", {"n": n}) for n in range(3)]
        core.only_documented(lambda: box.append(rows, newest + 3), "an outbox append")
        box.rewind()
        taken = core.only_documented(lambda: box.read(100), "an outbox read after the append")
        if isinstance(taken, list):
            if not all(isinstance(row, tuple) and len(row) == 3 and type(row[0]) is int for row in taken):
                raise core.Finding(f"an outbox read gave rows that are not (seq, tag, data): {taken[:3]!r:.200}")
            seqs = [row[0] for row in taken]
            if seqs != sorted(set(seqs)):
                raise core.Finding(f"an outbox read gave seqs out of order: {seqs[:10]}")
            if taken:
                core.only_documented(lambda: box.ack(taken[-1][0], len(taken)), "an outbox ack")
        if box.pending < 0:
            raise core.Finding(f"an outbox counts {box.pending} events waiting")
    finally:
        box.close()


@core.target("outbox", "eventbus.forwarding.outbox: a forwarder's SQLite outbox opened on arbitrary file bytes or rows, "
                       "then read, appended to and acknowledged",
             max_len=32768, per_input=5.0, seeds=lambda: outbox_seeds(),
             words=(b"raw", b"batch", b"meta", b"events", b"intake", b"delivered", b"dropped", b"SQLite format 3\x00",
                    b"\x93", b"\x96", core.MESSAGE_MARK, core.FRAME_MARK))
def outbox() -> Iterator[core.OneInput]:
    with core.guarded("outbox") as (box, watcher):
        yield core.checked(lambda data: check_outbox(box.inside / "o", data), watcher, box)


def outbox_seeds() -> list[bytes]:
    """Outboxes a forwarder leaves: rows of batches with their cursor, the old per-event table, a raw file."""
    rows = [(n, f"salt/job/{n}", {"n": n, "s": "x"}) for n in range(1, 6)]
    blob = outbox_module._pack(rows)
    seeds = [
        core.join([[b"batch", b"1", b"5", b"5", blob], [b"meta", b"intake", b"5"], [b"meta", b"delivered", b"0"]]),
        core.join([[b"batch", b"1", b"2", b"2", outbox_module._pack(rows[:2])],
                   [b"batch", b"3", b"5", b"3", outbox_module._pack(rows[2:])], [b"meta", b"dropped", b"4"]]),
        core.join([[b"events", b"7", b"a/b", msgpack.packb({"k": 1})], [b"meta", b"intake", b"7"]]),
    ]
    root = core.sandbox_root("outbox-seeds")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    made = Outbox(root / "x.outbox", 10)
    made.append(rows, 5)
    made.close()
    db = sqlite3.connect(root / "x.outbox")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    seeds.append(core.join([[b"raw", (root / "x.outbox").read_bytes()]]))
    shutil.rmtree(root, ignore_errors=True)
    return seeds
