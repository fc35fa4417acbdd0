"""The relay spool: ordered, bounded with the oldest dropped, surviving restarts, read from memory or disk."""
from __future__ import annotations

import os
import threading
import time

from eventbus.daemon.link import spool as spool_module
from eventbus.daemon.link.spool import Spool


def frames(start: int, count: int) -> list[bytes]:
    return [b"t\x00n%d" % n for n in range(start, start + count)]


def test_events_come_out_in_order_until_acknowledged(tmp_path):
    spool = Spool(tmp_path, max_events=100)
    first = spool.next_seq
    assert first > time.time_ns() // 1000 - 10_000_000, "a fresh spool numbers from the clock"
    spool.append(frames(0, 5))
    got = spool.read(spool.head, 3)
    assert [f for _, f in got] == frames(0, 3) and [s for s, _ in got] == [first, first + 1, first + 2]
    assert [f for _, f in spool.read(got[-1][0], 10)] == frames(3, 2)
    spool.ack(first + 2)
    assert len(spool) == 2 and [f for _, f in spool.read(0, 10)] == frames(3, 2)
    spool.ack(first + 4)
    assert len(spool) == 0 and spool.read(0, 10) == []
    spool.close()


def test_full_spool_drops_the_oldest_and_counts(tmp_path):
    spool = Spool(tmp_path, max_events=10)
    assert spool.append(frames(0, 8)) == 0
    assert spool.append(frames(8, 7)) == 5
    assert spool.dropped == 5 and len(spool) == 10
    assert [f for _, f in spool.read(0, 100)] == frames(5, 10)
    spool.close()


def test_restart_keeps_unacknowledged_events_and_numbering(tmp_path):
    spool = Spool(tmp_path, max_events=100)
    spool.append(frames(0, 10))
    spool.ack(spool.head + 4)
    next_seq = spool.next_seq
    spool.close()
    again = Spool(tmp_path, max_events=100)
    assert len(again) == 6 and again.next_seq == next_seq
    assert [f for _, f in again.read(0, 100)] == frames(4, 6)
    again.close()


def test_a_half_written_record_is_cut_off(tmp_path):
    spool = Spool(tmp_path, max_events=100)
    spool.append(frames(0, 3))
    spool.close()
    segment = sorted(tmp_path.glob("seg-*"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x00\x10\x00")
    again = Spool(tmp_path, max_events=100)
    assert [f for _, f in again.read(0, 100)] == frames(0, 3)
    again.append(frames(3, 1))
    assert [f for _, f in again.read(0, 100)] == frames(0, 4)
    again.close()


def test_disk_reads_past_memory_and_segments_rotate(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    spool = Spool(tmp_path, max_events=1000, memory_events=5)
    for n in range(0, 100, 10):
        spool.append(frames(n, 10))
    assert len(list(tmp_path.glob("seg-*"))) > 3
    out, after = [], spool.head
    while batch := spool.read(after, 7):
        out += [f for _, f in batch]
        after = batch[-1][0]
    assert out == frames(0, 100)
    spool.ack(spool.head + 90)
    assert len(list(tmp_path.glob("seg-*"))) <= 2
    assert [f for _, f in spool.read(0, 100)] == frames(90, 10)
    spool.close()
    again = Spool(tmp_path, max_events=1000, memory_events=5)
    assert [f for _, f in again.read(0, 100)] == frames(90, 10)
    again.close()


def test_a_syncing_spool_fsyncs_on_its_own_thread_never_the_callers(tmp_path, monkeypatch):
    """F2 (docs/fuzz.md): the minion's loop never waits for the disk; its once-a-second sync is a thread's."""
    synced_on: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced_on.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spool = Spool(tmp_path / "spool", max_events=100)
    syncer = spool.start_syncing()
    spool.append([b"a/b\x00\x80"] * 3)
    spool.sync()
    assert syncer.idle(30) and syncer.synced == 1
    assert synced_on and set(synced_on) == {"spool-sync"}, synced_on
    spool.sync()
    assert syncer.synced == 1, "nothing new: no sync"
    spool.ack(spool.next_seq - 2)
    spool.append([b"a/b\x00\x81"])
    spool.sync()
    assert syncer.idle(30) and syncer.synced == 2
    spool.close()  # stops the thread, then the last sync on the caller's thread
    reopened = Spool(tmp_path / "spool", max_events=100)
    assert [frame for _, frame in reopened.read(0, 10)] == [b"a/b\x00\x80", b"a/b\x00\x81"]
    reopened.close()
