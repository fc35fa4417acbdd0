"""The journal's writing: the on-disk format, rolling segments, fsync modes, a full disk and other write failures."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventbus.daemon.journal.writer import Journal, default_segment_bytes
from eventbus.errors import JournalError
from eventbus.journal.reader import JournalReader
from eventbus.journal.format import RECORD_OVERHEAD, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC
from tests.journalkit import EPOCH, batch, journal, read_all, segment_files


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


def test_only_newer_seqs_are_appended(tmp_path):
    writer = journal(tmp_path)
    writer.append(batch(EPOCH + 1, 10))
    writer.append(batch(EPOCH + 5, 10))  # a re-append after an error overlaps what is on disk
    writer.append(batch(EPOCH + 3, 2))
    events, lost = read_all(writer.reader)
    assert [s for s, _ in events] == list(range(EPOCH + 1, EPOCH + 15)) and lost == 0
    writer.close()


# -- segments and fsync -------------------------------------------------------------


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


def _times_run(thread) -> int:
    """How many times the kernel has run ``thread`` (the third field of its schedstat)."""
    return int(Path(f"/proc/self/task/{thread.native_id}/schedstat").read_text().split()[2])


def _synced(writer: Journal, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not writer._dirty:
            return True
        time.sleep(0.01)
    return False


def test_the_batch_sync_thread_sleeps_while_nothing_is_written_and_syncs_each_write(tmp_path):
    writer = journal(tmp_path, fsync="batch")
    thread = writer._sync_thread
    assert thread is not None and thread.name == "journal-fsync"
    try:
        writer.append(batch(EPOCH + 1, 3))
        assert _synced(writer, time.monotonic() + 10)  # synced 0.1 s after the write, on any loaded host
        time.sleep(0.2)  # the thread back asleep
        before = _times_run(thread)
        time.sleep(1.0)
        # Asleep on an untimed wait: it has not run at all (it used to wake ten times a second).
        assert _times_run(thread) == before
        writer.append(batch(EPOCH + 4, 1))  # a write wakes it again, and is synced
        assert _synced(writer, time.monotonic() + 10)
        assert _times_run(thread) > before
    finally:
        writer.close()
    assert not thread.is_alive()


# -- a real full disk -------------------------------------------------------------------

FULL_DISK_SCENARIO = r'''
import errno, os, sys
sys.path.insert(0, {root!r})
from tests.journalkit import batch, journal, read_all, EPOCH
from tests.unit.test_journal import write_syscalls
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
