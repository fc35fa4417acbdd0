"""The journal's storage engine: format, torn tails, retention, seams, time lookup, a real full disk."""
from __future__ import annotations

import logging
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus.daemon.journal.writer import Journal, default_segment_bytes
from eventbus.errors import EventBusError, JournalError
from eventbus.journal.reader import JournalReader, JournalStats
from eventbus.journal.format import RECORD_OVERHEAD, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC

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


def journal_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("eventbus.journal.", "eventbus.daemon.journal.")) and r.levelno >= logging.WARNING]


# -- the format -----------------------------------------------------------------------


def test_events_come_back_as_written_from_this_and_another_reader(tmp_path):
    written = batch(EPOCH + 1, 256) + batch(EPOCH + 257, 10, size=3000)
    with_journal = journal(tmp_path / "j")
    assert with_journal.last_seq == 0
    with_journal.append(written[:256])
    with_journal.append(written[256:])
    assert read_all(with_journal.reader) == (written, 0)
    assert read_all(JournalReader(tmp_path / "j")) == (written, 0)
    with_journal.close()
    (segment,) = segment_files(tmp_path / "j")
    assert segment.read_bytes()[:len(SEGMENT_MAGIC)] == SEGMENT_MAGIC
    assert segment.stat().st_size == SEGMENT_HEADER_SIZE + sum(len(f) + RECORD_OVERHEAD for _, f in written)
    assert os.stat(tmp_path / "j").st_mode & 0o777 == 0o700
    again = journal(tmp_path / "j")
    assert again.last_seq == EPOCH + 266
    assert read_all(again.reader, EPOCH + 200) == (written[200:], 0)
    again.close()


def test_a_100_byte_event_costs_at_most_one_and_a_half_times_its_frame(tmp_path):
    writer = journal(tmp_path)
    for first in range(EPOCH + 1, EPOCH + 10_001, 250):
        writer.append(batch(first, 250))
    stats = writer.reader.stats()
    assert stats.events == 10_000
    assert stats.bytes / stats.events <= 1.5 * 100
    writer.close()


def test_stats_describe_what_is_retained(tmp_path):
    clock = Clock()
    writer = journal(tmp_path, clock)
    assert writer.reader.stats() == JournalStats(None, None, None, None, 0, SEGMENT_HEADER_SIZE * 0, 0)
    writer.append(batch(EPOCH + 1, 5))
    clock.now += 60
    writer.append(batch(EPOCH + 6, 5))
    stats = JournalReader(tmp_path).stats()
    assert (stats.first_seq, stats.last_seq, stats.events, stats.segments) == (EPOCH + 1, EPOCH + 10, 10, 1)
    assert stats.first_time == pytest.approx(T0) and stats.last_time == pytest.approx(T0 + 60)
    assert stats.bytes == os.path.getsize(segment_files(tmp_path)[0])
    assert JournalReader(tmp_path).last_seq() == EPOCH + 10
    writer.close()


def test_a_reader_of_a_missing_journal_gets_a_journal_error(tmp_path):
    with pytest.raises(JournalError) as caught:
        JournalReader(tmp_path / "nowhere").stats()
    assert isinstance(caught.value, EventBusError) and caught.value.path == str(tmp_path / "nowhere")


def test_only_newer_seqs_are_appended(tmp_path):
    writer = journal(tmp_path)
    writer.append(batch(EPOCH + 1, 10))
    writer.append(batch(EPOCH + 5, 10))  # a re-append after an error overlaps what is on disk
    writer.append(batch(EPOCH + 3, 2))
    events, lost = read_all(writer.reader)
    assert [s for s, _ in events] == list(range(EPOCH + 1, EPOCH + 15)) and lost == 0
    writer.close()


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


# -- seams ----------------------------------------------------------------------------


def test_reads_cross_segments_and_a_restart_without_loss_but_stop_at_a_hole(tmp_path):
    writer = journal(tmp_path, segment_bytes=1000)
    run1 = batch(EPOCH + 1, 40)
    for at in range(0, 40, 8):
        writer.append(run1[at:at + 8])
    assert len(segment_files(tmp_path)) > 3
    restart = EPOCH + 1000
    run2 = batch(restart + 1, 10, epoch=restart)
    writer.append(run2)
    hole_after = batch(restart + 16, 5, epoch=restart)  # 11..15 of this run never reached the journal
    writer.append(hole_after)
    for reader in (writer.reader, JournalReader(tmp_path)):
        for limit in (1, 3, 7, 1000):
            assert read_all(reader, 0, limit) == (run1 + run2 + hole_after, 5)
        first = reader.read(EPOCH + 30)
        assert first.events == run1[30:] + run2 and first.lost == 0 and not first.at_end
        second = reader.read(restart + 10)
        assert second.events == hole_after and second.lost == 5 and second.at_end
        assert reader.read(restart + 12).lost == 3
        assert reader.read(restart + 20) == reader.read(restart + 20) and reader.read(restart + 20).at_end
        after_restart = reader.read(EPOCH + 500)
        assert after_restart.events[0][0] == restart + 1 and after_restart.lost == 0
    writer.close()


def test_a_restart_whose_first_events_are_missing_counts_them(tmp_path):
    writer = journal(tmp_path)
    writer.append(batch(EPOCH + 1, 5))
    restart = EPOCH + 100
    writer.append(batch(restart + 4, 3, epoch=restart))  # restart+1..+3 existed but were not written
    got = writer.reader.read(EPOCH + 5)
    assert got.lost == 3 and got.events[0][0] == restart + 4
    assert writer.reader.read(EPOCH + 2).events[0][0] == EPOCH + 3
    writer.close()


def test_read_honours_limit_and_bytes_and_reports_the_end(tmp_path):
    writer = journal(tmp_path)
    writer.append(batch(EPOCH + 1, 50))
    assert len(writer.reader.read(0, limit=7).events) == 7
    assert len(writer.reader.read(0, max_bytes=250).events) == 3
    assert len(writer.reader.read(0, max_bytes=1).events) == 1
    assert writer.reader.read(EPOCH + 43, limit=7).at_end
    assert writer.reader.read(EPOCH + 50) .at_end and writer.reader.read(EPOCH + 60).events == []
    writer.close()


# -- time -----------------------------------------------------------------------------


def test_seq_before_time_finds_the_first_event_at_or_after_a_time(tmp_path):
    clock = Clock()
    writer = journal(tmp_path, clock, segment_bytes=4096)
    for minute in range(60):
        clock.now = T0 + 60 * minute
        writer.append(batch(EPOCH + 1 + 10 * minute, 10))
    assert len(segment_files(tmp_path)) > 5
    for reader in (writer.reader, JournalReader(tmp_path)):
        assert reader.seq_before_time(T0 - 1) == 0
        assert reader.seq_before_time(T0) == 0
        assert reader.seq_before_time(T0 + 1) == EPOCH + 10
        assert reader.seq_before_time(T0 + 60 * 30) == EPOCH + 300
        assert reader.seq_before_time(T0 + 60 * 30 - 0.5) == EPOCH + 300
        assert reader.seq_before_time(T0 + 60 * 59) == EPOCH + 590
        assert reader.seq_before_time(T0 + 3600) == EPOCH + 600
        first = reader.read(reader.seq_before_time(T0 + 60 * 42 + 1))
        assert first.events[0][0] == EPOCH + 431 and first.lost == 0
    writer.close()


# -- retention ------------------------------------------------------------------------


def test_retention_by_bytes_deletes_the_oldest_segments_and_counts_them_lost(tmp_path):
    writer = journal(tmp_path, max_bytes=20_000, segment_bytes=4000)
    written = batch(EPOCH + 1, 1000)
    for at in range(0, 1000, 25):
        writer.append(written[at:at + 25])
        files = segment_files(tmp_path)
        assert sum(f.stat().st_size for f in files) <= 20_000 + 25 * 124, "bounded by max_bytes"
    first_kept = writer.reader.stats().first_seq
    assert first_kept > EPOCH + 500 and segment_files(tmp_path)[0].name == f"{first_kept:020d}.jnl"
    for reader in (writer.reader, JournalReader(tmp_path)):
        assert read_all(reader) == (written[first_kept - EPOCH - 1:], first_kept - EPOCH - 1)
        assert reader.read(EPOCH + 10).lost == first_kept - EPOCH - 11
        assert reader.read(EPOCH + 1000).lost == 0
    writer.close()
    again = journal(tmp_path, max_bytes=20_000, segment_bytes=4000)
    assert read_all(again.reader)[1] == first_kept - EPOCH - 1, "purged counts survive a restart"
    again.close()


def test_retention_by_age_deletes_old_segments_but_never_the_active_one(tmp_path):
    clock = Clock()
    writer = journal(tmp_path, clock, max_age=3600, segment_bytes=4000)
    for hour in range(4):
        clock.now = T0 + 3600 * hour
        writer.append(batch(EPOCH + 1 + 100 * hour, 100))
    clock.now = T0 + 3 * 3600 + 1800
    writer.poll()
    stats = writer.reader.stats()
    assert stats.first_time == pytest.approx(T0 + 3 * 3600), "segments whose newest event is over an hour old go"
    assert read_all(writer.reader)[1] == stats.first_seq - EPOCH - 1
    clock.now += 10 * 86400
    writer.poll()
    assert segment_files(tmp_path) and writer.reader.stats().last_seq == EPOCH + 400, "active kept"
    assert writer.reader.read(0).lost == writer.reader.stats().first_seq - EPOCH - 1
    writer.append(batch(EPOCH + 401, 1))
    assert writer.reader.read(EPOCH + 400).events == batch(EPOCH + 401, 1)
    writer.close()


def test_default_segment_size_follows_the_bound():
    assert default_segment_bytes(1 << 30) == 16 << 20
    assert default_segment_bytes(32 << 20) == 2 << 20
    assert default_segment_bytes(1 << 20) == 1 << 20


def test_a_bad_fsync_mode_is_a_journal_error(tmp_path):
    with pytest.raises(JournalError, match="journal_fsync"):
        Journal(tmp_path, 1 << 20, 60, "sometimes")


@pytest.mark.parametrize("mode", ["always", "batch"])
def test_synced_modes_write_the_same_journal(tmp_path, mode):
    writer = journal(tmp_path, fsync=mode, segment_bytes=4096)
    written = batch(EPOCH + 1, 200)
    for at in range(0, 200, 20):
        writer.append(written[at:at + 20])
    writer.close()
    assert not any(t.name == "journal-fsync" for t in __import__("threading").enumerate())
    assert read_all(JournalReader(tmp_path)) == (written, 0)


# -- a model of random use ------------------------------------------------------------

operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 40), st.sampled_from(["next", "next", "hole", "restart", "overlap"])),
    st.tuples(st.just("wait"), st.integers(1, 4000), st.just("")),
    st.tuples(st.just("reopen"), st.integers(0, 1), st.just("")),
    st.tuples(st.just("tear"), st.integers(1, 400), st.sampled_from(["", "garbage"])),
), min_size=1, max_size=30)


def existed_of(appended: list[tuple[int, bytes]]) -> set[int]:
    """Every seq that existed: each appended one and those missing before it inside its run."""
    existed: set[int] = set()
    prev = 0
    for seq, data in appended:
        existed.update(range(max(prev, struct.unpack_from(">Q", data, 8)[0]) + 1, seq + 1))
        prev = seq
    return existed


def read_to(at: int, events: list[tuple[int, bytes]], lost: int, appended: list[tuple[int, bytes]]) -> int:
    """A reader's position after a ``read_all`` from ``at``: its last event; with none but some lost, everything
    appended so far is behind it (a reader that went on from ``at`` would count the same loss twice)."""
    if events:
        return events[-1][0]
    return appended[-1][0] if lost and appended else at


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.integers(0, 2**32))
def test_every_retained_event_is_read_once_in_order_and_the_rest_counted(ops, seed):
    rng = random.Random(seed)
    directory = Path(tempfile.mkdtemp(prefix="jprop"))
    clock = Clock()
    options = {"max_bytes": 12_000, "max_age": 10_000, "segment_bytes": 3000}
    writer = journal(directory, clock, **options)
    appended: list[tuple[int, bytes]] = []
    epoch, seq = EPOCH, EPOCH
    follower = JournalReader(directory)  # one reader in "another process", reading as the journal changes
    followed: list[tuple[int, bytes]] = []
    follower_lost = 0
    follow_at = 0  # where the follower goes on from: its last event, or past what it was told is gone
    try:
        for op, number, kind in ops:
            if rng.random() < 0.5:
                events, lost = read_all(follower, follow_at, rng.choice([3, 1000]))
                followed += events
                follower_lost += lost
                follow_at = read_to(follow_at, events, lost, appended)
            if op == "append":
                if kind == "hole":
                    seq += rng.randint(1, 5)
                elif kind == "restart":
                    epoch = seq + rng.randint(0, 50)
                    seq = epoch + rng.randint(0, 2)
                start = seq + 1 if kind != "overlap" or not appended else max(EPOCH + 1, seq - rng.randint(0, 5))
                entries = batch(start, number, epoch, size=rng.choice([40, 100, 300]))
                writer.append(entries)
                for new_seq, new_frame in entries:
                    if new_seq > seq:
                        appended.append((new_seq, new_frame))
                        seq = new_seq
            elif op == "wait":
                clock.now += number
                writer.poll()
            elif op == "tear":  # power lost: the tail of the last segment is gone or garbage
                writer.close()
                segments = segment_files(directory)
                if segments:
                    size = segments[-1].stat().st_size
                    os.truncate(segments[-1], max(SEGMENT_HEADER_SIZE, size - number))
                    if kind:
                        with open(segments[-1], "ab") as stream:
                            stream.write(rng.randbytes(number))
                writer = journal(directory, clock, **options)
                appended = [e for e in appended if e[0] <= writer.last_seq]
                seq = max(writer.last_seq, EPOCH)
                epoch = min(epoch, seq)
                follower, followed, follower_lost, follow_at = JournalReader(directory), [], 0, 0  # it died too
            else:
                crashed = writer
                if number:
                    crashed.close()
                writer = journal(directory, clock, **options)
                crashed.close()  # after the new open, as if it had died: its writes are in the page cache
                assert writer.last_seq == (appended[-1][0] if appended else 0)
        last = appended[-1][0] if appended else EPOCH
        existed = existed_of(appended)
        events, lost = read_all(follower, follow_at)
        followed += events
        assert [s for s, _ in followed] == sorted({s for s, _ in followed}), "each once, in order"
        assert set(followed) <= set(appended)
        assert follower_lost + lost + len(followed) == len(existed)
        for reader in (writer.reader, JournalReader(directory)):
            first_kept = reader.stats().first_seq
            kept = [e for e in appended if first_kept is not None and e[0] >= first_kept]
            afters = {0, last, rng.randint(EPOCH - 5, last + 5)} | {s - 1 for s, _ in appended[::7]}
            for after in sorted(afters):
                events, lost = read_all(reader, after, rng.choice([1, 5, 1000]))
                assert events == [e for e in kept if e[0] > after]
                assert lost + len(events) == len([s for s in existed if s > after])
    finally:
        writer.close()
        shutil.rmtree(directory, ignore_errors=True)


# -- a real full disk -------------------------------------------------------------------

FULL_DISK_SCENARIO = r'''
import errno, os, sys
sys.path.insert(0, {root!r})
from tests.unit.test_journal import batch, journal, read_all, write_syscalls, EPOCH
from eventbus.journal.reader import JournalReader

def scenario(directory, make_room, expected_errno):
    errors, recoveries = [], []
    writer = journal(directory, on_error=errors.append, on_recover=lambda: recoveries.append(1),
                     segment_bytes=256 * 1024)
    seq = EPOCH
    while not errors:
        assert seq < EPOCH + 100_000, "the disk never filled"
        writer.append(batch(seq + 1, 64, size=1000))
        seq += 64
    writes = write_syscalls()
    for _ in range(50):
        writer.append(batch(seq + 1, 64, size=1000))  # dropped cheaply, no exception
        seq += 64
    assert write_syscalls() == writes, "a failed journal drops entries without a syscall"
    writer.poll()
    assert len(errors) == 1 and writer.failed == errors[0], errors
    assert os.strerror(expected_errno) in errors[0] and directory in errors[0], errors
    kept, lost = read_all(writer.reader)
    assert [s for s, _ in kept] == list(range(EPOCH + 1, EPOCH + 1 + len(kept))) and lost == 0
    make_room(directory)
    writer.poll()
    assert writer.failed is None and recoveries == [1] and len(errors) == 1
    writer.append(batch(seq - 9, 10, size=1000))  # the daemon re-appends its window: seqs jumped
    writer.append(batch(seq - 19, 30, size=1000))
    writer.poll()
    events, lost = read_all(JournalReader(directory))
    seqs = [s for s, _ in events]
    assert seqs == sorted(set(seqs)) and seqs[-1] == seq + 10
    assert seqs[-20:] == list(range(seq - 9, seq + 11))
    assert lost + len(events) == seq + 10 - EPOCH, "the dropped ones count as lost"
    writer.close()
    print("ok")
'''


def _make_room_by_deleting_a_file(directory: str) -> None:
    os.unlink(os.path.join(os.path.dirname(directory), "ballast"))


def test_a_full_disk_never_raises_reports_once_and_recovers(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        _full_disk_by_file_size_limit(tmp_path)
        return
    try:
        (mount / "ballast").write_bytes(b"b" * 1_500_000)
        namespace: dict = {}
        root = str(Path(__file__).resolve().parents[2])
        exec(FULL_DISK_SCENARIO.format(root=root), namespace)
        import errno
        namespace["scenario"](str(mount / "j"), _make_room_by_deleting_a_file, errno.ENOSPC)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _full_disk_by_file_size_limit(tmp_path: Path) -> None:
    """Where mounting is refused: a file size limit in a child process gives EFBIG instead of ENOSPC."""
    root = str(Path(__file__).resolve().parents[2])
    script = FULL_DISK_SCENARIO.format(root=root) + r'''
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
def raise_limit(directory):
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
scenario(sys.argv[1], raise_limit, errno.EFBIG)
'''
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "j")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_full_disk_fallback_with_a_file_size_limit(tmp_path):
    _full_disk_by_file_size_limit(tmp_path)


def test_an_unusable_directory_reports_once_and_never_raises(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    errors = []
    writer = journal(tmp_path / "file" / "j", on_error=errors.append)
    assert writer.last_seq == 0
    writer.append(batch(EPOCH + 1, 10))
    writer.poll()
    writer.append(batch(EPOCH + 11, 10))
    assert len(errors) == 1 and str(tmp_path / "file" / "j") in errors[0] and "Not a directory" in errors[0]
    writer.close()


def test_a_vanished_directory_is_recreated_by_poll(tmp_path):
    errors, recoveries = [], []
    writer = journal(tmp_path / "j", on_error=errors.append, on_recover=lambda: recoveries.append(1),
                     segment_bytes=2000)
    writer.append(batch(EPOCH + 1, 30))
    shutil.rmtree(tmp_path / "j")
    for first in range(EPOCH + 31, EPOCH + 100, 10):
        writer.append(batch(first, 10))
    assert len(errors) == 1 and "No such file or directory" in errors[0]
    writer.poll()
    assert recoveries == [1] and writer.failed is None
    writer.append(batch(EPOCH + 101, 5))
    events, lost = read_all(JournalReader(tmp_path / "j"))
    assert events == batch(EPOCH + 101, 5) and lost == 100
    writer.close()


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


def write_syscalls() -> int:
    """Write syscalls this process made so far (Linux accounting)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/self/io")


def test_one_write_syscall_per_append(tmp_path):
    writer = journal(tmp_path / "j")
    writer.append(batch(EPOCH + 1, 256))  # creates the segment
    before = write_syscalls()
    for first in range(EPOCH + 257, EPOCH + 257 + 256 * 50, 256):
        writer.append(batch(first, 256))
    assert write_syscalls() - before == 50
    assert writer.reader.stats().events == 256 * 51
    writer.close()
