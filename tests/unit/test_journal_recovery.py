"""The journal's recovery: torn or corrupt tails cut off on open, a half-written record, a crash mid-purge."""
from __future__ import annotations

import logging
import os
import random
import shutil
import struct
from pathlib import Path

import pytest

from eventbus.journal.reader import JournalReader
from eventbus.journal.format import RECORD_OVERHEAD, SEGMENT_HEADER_SIZE
from tests.journalkit import EPOCH, batch, journal, read_all, segment_files


def journal_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("eventbus.journal.", "eventbus.daemon.journal.")) and r.levelno >= logging.WARNING]


# -- torn tails -------------------------------------------------------------------------


def _journal_with_three_batches(directory: Path) -> tuple[list[tuple[int, bytes]], int]:
    writer = journal(directory)
    written = batch(EPOCH + 1, 20)
    for part in (written[:10], written[10:19], written[19:]):
        writer.append(part)
    writer.close()
    (segment,) = segment_files(directory)
    return written, segment.stat().st_size - (len(written[-1][1]) + RECORD_OVERHEAD)


def test_a_tail_cut_anywhere_in_the_last_record_is_cut_off_with_one_line(tmp_path, caplog):
    original = tmp_path / "original"
    written, last_record_at = _journal_with_three_batches(original)
    size = segment_files(original)[0].stat().st_size
    for cut in range(last_record_at, size):
        copy = tmp_path / f"cut{cut}"
        shutil.copytree(original, copy)
        os.truncate(segment_files(copy)[0], cut)
        caplog.clear()
        writer = journal(copy)
        warnings = journal_warnings(caplog)
        if cut == last_record_at:
            assert warnings == [], "a tail on a record boundary is whole"
        else:
            assert len(warnings) == 1, warnings
            assert str(segment_files(copy)[0]) in warnings[0]
            assert f"offset {last_record_at} ({cut - last_record_at} bytes" in warnings[0]
        assert writer.last_seq == EPOCH + 19
        writer.append(batch(EPOCH + 20, 1))  # the daemon numbers on from what is on disk
        assert read_all(writer.reader) == (written, 0)
        writer.close()
        shutil.rmtree(copy)


@pytest.mark.parametrize("tail", [b"\x00" * 300, bytes(random.Random(7).randrange(256) for _ in range(300)),
                                  struct.pack(">QQI", EPOCH + 99, 0, 50) + b"y" * 50 + b"\x00\x00\x00\x00"])
def test_garbage_after_the_last_record_is_cut_off(tmp_path, caplog, tail):
    written, _ = _journal_with_three_batches(tmp_path)
    segment = segment_files(tmp_path)[0]
    good = segment.stat().st_size
    with open(segment, "ab") as stream:
        stream.write(tail)
    writer = journal(tmp_path)
    warnings = journal_warnings(caplog)
    assert len(warnings) == 1 and f"offset {good} ({len(tail)} bytes" in warnings[0]
    assert segment.stat().st_size == good
    assert read_all(writer.reader) == (written, 0)
    writer.close()


def test_a_flipped_bit_in_the_last_record_cuts_only_that_record(tmp_path, caplog):
    written, last_record_at = _journal_with_three_batches(tmp_path)
    segment = segment_files(tmp_path)[0]
    raw = bytearray(segment.read_bytes())
    raw[last_record_at + 40] ^= 0x10
    segment.write_bytes(bytes(raw))
    writer = journal(tmp_path)
    warnings = journal_warnings(caplog)
    assert len(warnings) == 1 and "checksum" in warnings[0] and f"offset {last_record_at}" in warnings[0]
    assert read_all(writer.reader) == (written[:-1], 0)
    writer.close()


@pytest.mark.parametrize("where", [30, 18, 16], ids=["frame", "length", "length-high-byte"])
def test_a_corrupt_record_in_an_older_segment_ends_that_segment_with_one_line(tmp_path, caplog, where):
    writer = journal(tmp_path, segment_bytes=4096)
    written = batch(EPOCH + 1, 100)
    for at in range(0, 100, 10):
        writer.append(written[at:at + 10])
    writer.close()
    first = segment_files(tmp_path)[0]
    raw = bytearray(first.read_bytes())
    record = len(written[0][1]) + RECORD_OVERHEAD
    raw[SEGMENT_HEADER_SIZE + 5 * record + where] ^= 0x40  # the sixth record
    first.write_bytes(bytes(raw))
    caplog.clear()
    for reader in (JournalReader(tmp_path), journal(tmp_path).reader):
        events, lost = read_all(reader)
        events2, _ = read_all(reader)
        assert events == events2 == written[:5] + written[first_segment_count(tmp_path, written):]
        assert lost == len(written) - len(events), "the unreadable ones of this run count as lost"
    errors = [m for m in journal_warnings(caplog) if "corrupt record at offset" in m]
    assert len(errors) == 2 and all(str(first) in m for m in errors)  # one per reader, not per read


def first_segment_count(directory: Path, written) -> int:
    second = segment_files(directory)[1]
    return int(second.name[:-4]) - written[0][0]


def test_a_reader_takes_a_half_written_record_for_the_end_and_cuts_nothing(tmp_path, caplog):
    writer = journal(tmp_path)
    writer.append(batch(EPOCH + 1, 10))
    segment = segment_files(tmp_path)[0]
    size = segment.stat().st_size
    with open(segment, "ab") as stream:  # what another process sees while the writer is mid-write
        stream.write(struct.pack(">QQI", EPOCH + 11, 0, 100) + b"z" * 20)
    reader = JournalReader(tmp_path)
    got = reader.read(0)
    assert [s for s, _ in got.events] == list(range(EPOCH + 1, EPOCH + 11)) and got.at_end and got.lost == 0
    assert reader.last_seq() == EPOCH + 10 and reader.stats().events == 10
    assert segment.stat().st_size == size + 40 and journal_warnings(caplog) == []
    writer.close()


# -- a crash mid-purge ----------------------------------------------------------------


def test_a_crash_between_noting_and_deleting_a_purged_segment_counts_it_once(tmp_path):
    writer = journal(tmp_path / "j", segment_bytes=3000)
    written = batch(EPOCH + 1, 200)
    for at in range(0, 200, 20):
        writer.append(written[at:at + 20])
    writer.close()
    shutil.copytree(tmp_path / "j", tmp_path / "before")
    small = journal(tmp_path / "j", max_bytes=10_000, segment_bytes=3000)
    small.close()
    kept = {p.name for p in (tmp_path / "j").iterdir()}
    restored = sorted(p for p in (tmp_path / "before").glob("*.jnl") if p.name not in kept)[-1]
    shutil.copy(restored, tmp_path / "j")
    shutil.copy(restored.with_suffix(".idx"), tmp_path / "j")
    first_restored = int(restored.name[:-4])
    for reader in (JournalReader(tmp_path / "j"), journal(tmp_path / "j", segment_bytes=3000).reader):
        events, lost = read_all(reader)
        assert events == written[first_restored - EPOCH - 1:]
        assert lost == first_restored - EPOCH - 1
