"""The journal's reading and retention: stats, reads across segments and restarts, time lookup, purging, a model."""
from __future__ import annotations

import os
import random
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus.errors import EventBusError, JournalError
from eventbus.journal.reader import JournalReader, JournalStats
from eventbus.journal.format import SEGMENT_HEADER_SIZE
from tests.journalkit import EPOCH, T0, Clock, batch, journal, read_all, segment_files


# -- stats ----------------------------------------------------------------------------


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
