"""The master's journal with the real daemon: restarts, kill -9, bounds, a full disk, follow()."""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from eventbus import aio, event
from eventbus.bus import control, wire
from eventbus.journal.reader import JournalReader
from tests.helpers import EVENTBUS, Node, short_tmpdir, wait_for


def fire_many(node: Node, tag: str, numbers: range, pad: int = 0) -> None:
    with event.get_event("master", opts=node.opts(), listen=False) as bus:
        for n in numbers:
            assert bus.fire_event({"n": n, "pad": "x" * pad}, tag, timeout=5000)
    last = numbers[-1] if numbers else None
    if last is not None:
        # Handed over is not yet numbered: wait until the master has journaled the last one.
        wait_for(lambda: any(_n_of(f) == last for _s, f in _tail(node)), what=f"event {last} in the journal")


def _tail(node: Node) -> list:
    reader = JournalReader(node.settings.journal_dir)
    return reader.read(max(0, reader.last_seq() - 50), 50).events


def _n_of(frame: bytes) -> int | None:
    from eventbus.bus import payload

    _seq, _epoch, _tag, raw = wire.split_bus_frame(frame)
    return payload.unpack_data(raw).get("n")


def follow_until(node: Node, since: int, count: int, tag: str = "") -> list[dict]:
    """The first ``count`` records ``follow(since)`` yields (gap notices included)."""
    out = []
    with event.get_event("master", opts=node.opts()) as bus:
        for record in bus.follow(since, tag=tag):
            out.append(record)
            if len(out) == count:
                return out
    return out


def test_events_survive_a_restart_and_seqs_keep_growing(master_node):
    master_node.start()
    fire_many(master_node, "j/before", range(100))
    first_epoch = control.ping(master_node.sock_dir)["epoch"]
    assert master_node.stop() == 0
    master_node.start()
    head = control.ping(master_node.sock_dir)
    assert head["epoch"] > first_epoch
    fire_many(master_node, "j/after", range(100, 110))
    got = follow_until(master_node, 0, 110, tag="j/")
    assert [r["data"]["n"] for r in got] == list(range(110)), "everything, in order, across the restart"
    seqs = [r["seq"] for r in got]
    assert seqs == sorted(set(seqs)) and seqs[100] > head["epoch"] >= seqs[99]
    # --since SEQ is exclusive: from the 100th on.
    again = follow_until(master_node, seqs[99], 10, tag="j/")
    assert [r["data"]["n"] for r in again] == list(range(100, 110))


def test_kill_9_loses_nothing_a_listener_had_received(master_node):
    master_node.start()
    listener = event.get_event("master", opts=master_node.opts())
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISH_FOREVER, str(master_node.path)])
    received = []
    try:
        while len(received) < 3000:
            data = listener.get_event(wait=10, tag="kill/")
            assert data is not None
            received.append(data["n"])
        master_node.daemon.kill()  # SIGKILL while events stream in
    finally:
        publisher.kill()
        publisher.wait()
        listener.destroy()
    master_node.start()
    journaled = [r["data"]["n"] for r in follow_until(master_node, 0, len(received), tag="kill/")]
    assert journaled == received
    assert "Traceback" not in master_node.daemon.log


PUBLISH_FOREVER = """
import sys
from eventbus import config, event
opts = config.client_config(sys.argv[1])
with event.get_event("master", opts=opts, listen=False) as bus:
    n = 0
    while bus.fire_event({"n": n}, "kill/x", timeout=5000):
        n += 1
"""


def test_a_bounded_journal_drops_oldest_and_a_follower_gets_a_gap_record_first():
    root = short_tmpdir("ebj")
    node = Node(root, "master", journal_max_bytes=1 << 20, event_window=100)
    try:
        node.start()
        fire_many(node, "b/x", range(4000), pad=900)  # about 4 MB through a 1 MiB journal
        stats = JournalReader(node.settings.journal_dir).stats()
        assert stats.bytes <= 2 << 20, "bounded (plus at most the active segment)"
        got = follow_until(node, 0, 2)
        assert got[0]["seq"] is None and got[0]["tag"] == "eventbus/stream/gap"
        kept = stats.events
        assert got[0]["data"]["lost"] == 4000 - kept
        assert got[1]["data"]["n"] == 4000 - kept
        out = subprocess.run([EVENTBUS, "journal", "-c", str(node.config_dir)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
        assert list(lines) == ["first_seq", "last_seq", "first_time", "last_time", "events", "bytes", "segments"]
        assert int(lines["events"]) == kept and int(lines["segments"]) >= 1
        assert int(lines["last_seq"]) - int(lines["first_seq"]) + 1 == kept
    finally:
        node.stop()
        node.cleanup()


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the full-disk test (needs root): {mounted.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_never_stops_the_bus_and_writing_resumes(master_node):
    disk = master_node.root / "disk"
    with small_disk(disk, "2m"):
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * (1536 * 1024))
        journal_dir = disk / "journal"
        master_node.path.write_text(master_node.path.read_text() + f"journal_dir: {journal_dir}\n")
        master_node.start()
        watcher = event.get_event("master", opts=master_node.opts())
        with event.get_event("master", opts=master_node.opts(), listen=False) as bus:
            for n in range(3000):  # about 1.2 MB: the disk fills on the way
                assert bus.fire_event({"n": n, "pad": "y" * 300}, "full/x", timeout=5000)
        got, errors = [], []
        while len(got) < 3000:
            full = watcher.get_event(wait=10, full=True)
            assert full is not None, f"the bus stopped after {len(got)} events"
            if full["tag"] == "eventbus/journal/error":
                errors.append(full["data"]["error"])
            elif full["tag"] == "full/x":
                got.append(full["data"]["n"])
        assert got == list(range(3000)), "the bus delivered everything while the disk was full"
        assert len(errors) == 1 and "No space left on device" in errors[0]
        assert master_node.daemon.log.count("No space left on device") == 1, "one log line"
        ballast.unlink()
        wait_for(lambda: "is written again" in master_node.daemon.log, 15, what="the journal to resume")
        fire_many(master_node, "full/x", range(3000, 3010))
        watcher.destroy()
        # What was kept in memory during the outage was written when the disk had room again.
        records = follow_until(master_node, 0, 3010, tag="full/")
        assert [r["data"]["n"] for r in records] == list(range(3010))
        master_node.stop()


def test_asyncio_follow_reads_history_then_live(master):
    fire_many(master, "a/x", range(5))

    async def main() -> list:
        out = []
        async with aio.get_event("master", opts=master.opts()) as bus:
            async for record in bus.follow(0, tag="a/"):
                out.append(record)
                if len(out) == 5:
                    await bus.fire_event({"n": 5}, "a/x")
                if len(out) == 6:
                    return out
        return out

    got = asyncio.run(asyncio.wait_for(main(), 30))
    assert [r["data"]["n"] for r in got] == list(range(6))
    assert all(isinstance(r["seq"], int) for r in got)
