"""Never drop, never repeat: a stream of 1,000 triggering events across master restarts and a reactor kill."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator

import pytest

from eventbus.event import MasterEvent
from tests.helpers import Node, short_tmpdir, wait_for
from tests.reactorkit import pid_alive, reactor_master, status, wait_reactor

TOTAL = 1000


@pytest.fixture
def counted() -> Iterator[tuple[Node, Path]]:
    """A master whose reactor appends each event's n to a file (one line per reaction)."""
    root = short_tmpdir("ebr")
    out = root / "reactions"
    # The command gets n as an argument, never inside the shell text.
    node = Node(root, "master", reactor=[
        {"t/n": [{"run": {"argv": ["/bin/sh", "-c", f'echo "$0" >> {out}', "{{ data.n }}"]}}]}])
    yield node, out
    if node.daemon is not None and node.daemon.alive():
        node.stop()
    node.cleanup()


def fire_range(node: Node, numbers: range) -> None:
    handle = MasterEvent(node.sock_dir, opts=node.opts(), listen=False)
    try:
        for n in numbers:
            assert handle.fire_event({"n": n}, "t/n", timeout=5000)
    finally:
        handle.destroy()


def lines(out: Path) -> list[int]:
    return [int(line) for line in out.read_text().split()] if out.exists() else []


def wait_all_done(node: Node, out: Path) -> list[int]:
    # Every n once at least: a count of lines would be reached early by the repeats a kill -9 may cause.
    wait_for(lambda: set(lines(out)) >= set(range(TOTAL)), 60, interval=0.1,
             what=f"a reaction to each of the {TOTAL} events")
    wait_for(lambda: (s := status(node)) and s["in_flight"] == 0 and s["cursor"] >= s["read"], 20,
             what="the reactor to be idle")
    return lines(out)


def test_a_master_restart_mid_stream_neither_drops_nor_repeats(counted: tuple[Node, Path]) -> None:
    node, out = counted
    node.start()
    wait_reactor(node)
    fire_range(node, range(0, 600))
    # Restart while reactions are still being worked through.
    wait_for(lambda: len(lines(out)) >= 20, 30, what="the first reactions")
    assert node.stop() == 0
    node.start()
    wait_reactor(node)
    fire_range(node, range(600, TOTAL))
    reactions = wait_all_done(node, out)
    assert sorted(reactions) == list(range(TOTAL)), (
        f"missing {sorted(set(range(TOTAL)) - set(reactions))[:10]}, "
        f"repeated {sorted(n for n in set(reactions) if reactions.count(n) > 1)[:10]}")
    assert "Traceback" not in node.daemon.log


def test_a_killed_reactor_is_restarted_and_resumes(counted: tuple[Node, Path]) -> None:
    node, out = counted
    node.start()
    first = wait_reactor(node)
    fire_range(node, range(0, 500))
    wait_for(lambda: len(lines(out)) >= 20, 30, what="the first reactions")
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: (s := status(node)) and s["pid"] != first["pid"] and s["running"], 20,
             what="the master to restart its reactor")
    fire_range(node, range(500, TOTAL))
    reactions = wait_all_done(node, out)
    # A kill -9 may repeat only what was running at that instant (finished, not yet recorded): nothing is lost.
    assert set(reactions) == set(range(TOTAL))
    assert len(reactions) - TOTAL <= 128


def test_a_burst_the_bus_drops_for_the_reactor_is_fetched_again_not_lost() -> None:
    node = reactor_master([{"t/burst": [{"fire": {"tag": "t/burst/done", "data": {"n": "{{ data.n }}"}}}]}],
                          subscriber_queue=1000)
    burst, every = 150_000, 100  # more than the reactor's queues hold (1,000 at the bus + 100,000 its own)
    try:
        node.start()
        reactor = wait_reactor(node)
        # Its status says running a moment before its listener is on the bus: stopped in between, it would
        # read the whole burst as history when it joins, and the bus would never drop for it.
        wait_for(lambda: node.handshakes() >= 1, 15, what="the reactor to listen on the bus")
        os.kill(reactor["pid"], signal.SIGSTOP)  # a reactor that does not read: the bus must drop for it
        try:
            handle = MasterEvent(node.sock_dir, opts=node.opts(), listen=False)
            try:
                for n in range(burst):
                    assert handle.fire_event({"n": n}, "t/burst" if n % every == 0 else "t/noise", timeout=5000)
            finally:
                handle.destroy()
        finally:
            os.kill(reactor["pid"], signal.SIGCONT)
        expected = list(range(0, burst, every))
        wait_for(lambda: (s := status(node)) and s["done"] >= len(expected), 120, interval=0.1,
                 what=f"{len(expected)} reactions")
        follower = MasterEvent(node.sock_dir, opts=node.opts())
        seen: list[int] = []
        try:
            follower.start_following(0)
            while len(seen) < len(expected):
                event = follower.get_event_record(wait=10, tag="t/burst/done", following=True)
                assert event is not None, f"only {len(seen)} reactions on the bus"
                assert event.seq is not None, "events went missing from the journal"
                seen.append(int(event.data["n"]))
        finally:
            follower.destroy()
        assert sorted(seen) == expected
        wait_for(lambda: status(node)["in_flight"] == 0, 10, what="the reactor to be idle")
        final = status(node)
        assert final["done"] == len(expected) and final["failed"] == 0 and final["lost"] == 0
        # The bus did drop events for the stopped reactor, and it fetched them back.
        assert "fetching them from its window and journal" in node.daemon.log
    finally:
        if node.daemon is not None and node.daemon.alive():
            node.stop()
        node.cleanup()


def test_a_master_kill_leaves_no_reactor_behind_and_the_next_resumes(counted: tuple[Node, Path]) -> None:
    node, out = counted
    node.start()
    first = wait_reactor(node)
    fire_range(node, range(0, 400))
    wait_for(lambda: len(lines(out)) >= 20, 30, what="the first reactions")
    node.daemon.kill()
    wait_for(lambda: not pid_alive(first["pid"]), 30, what="the orphaned reactor to stop")
    node.start()
    wait_for(lambda: (s := status(node)) and s["pid"] != first["pid"] and s["running"], 20,
             what="the new reactor")
    fire_range(node, range(400, TOTAL))
    reactions = wait_all_done(node, out)
    assert sorted(reactions) == list(range(TOTAL))


