"""A rogue accepted minion against a real master, while real minions relay: it floods and misbehaves, others go on.

The rogue holds a key the operator accepted and speaks the link protocol
itself (``tests.roguekit``): it floods from a process of its own, sends
malformed, oversize and master-only messages, fires reserved and other
minions' tags, claims other ids, replays relay seqs it was acked for and
answers fires that were not sent to it. Meanwhile three ``eventbus minion``
daemons relay a paced stream whose latency is measured before and during
the attack. Then it hangs up on the master with a full queue, which must
not end the master (libzmq aborted it when its heartbeats were on).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import zmq

from eventbus.daemon.link import protocol
from eventbus import event
from tests.helpers import EVENTBUS, run_cli, wait_for
from tests.linkkit import Site, master_link, wait_link
from tests.roguekit import Flood, HonestTraffic, Rogue, event_frame, malformed_messages, p99

HONEST = ("h1", "h2", "h3")
FORBIDDEN = ("salt/auth", "salt/key", "salt/key/x", "salt/presence/present", "salt/netapi/hook/x",
             "salt/minion/h1/start", "salt/minion/h1/x")
MAX_EVENT_SIZE = 65536
# Seqs far past anything the flood reaches: a batch there with floor just below is new (the protocol lets a
# minion say it dropped everything before), so each attack gets seqs of its own while the flood goes on.
JUMP = 2 ** 40
# The master's log line per kind of misbehaviour (eventbus.daemon.link.master_session, eventbus.daemon.link.relaystream).
KINDS = {
    "protocol": r"refused a (link|'\w+') message from minion 'rogue'",
    "oversize": r"refused a batch over .* from minion 'rogue'$",
    "budget": r"refused batches from minion 'rogue' over its relay budget of \d+ events/s",
    "tag": r"refused an event from minion 'rogue': tag '.*' (is reserved for the master|belongs to another minion)",
    "relay": r"refused an event from minion 'rogue': (?!tag '.*' (is reserved|belongs))",
    "replay": r"minion 'rogue' replayed relay seqs from",
    "claim": r"minion 'rogue' claimed the id '(h1|quiet)', which is bound to another key",
    "unaccepted": r"refused events from minion 'rogue' \(key .*, hello as 'h1'\)",
    "fired": r"minion 'rogue' acknowledged fire job \d+, which was not sent to it",
}


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site(heartbeat=1.0)
    yield s
    s.cleanup()


@pytest.fixture
def spools() -> Iterator[Path]:
    """Where the honest minions keep their spools: in memory where the host has it.

    A minion fsyncs its spool every second on its loop; on one host, behind the master's journal writes for
    the flood (and other jobs'), that fsync takes 100-300 ms now and then and holds the minion's relay as
    long. Minions run on other machines than their master: this is not what the test is about.
    """
    path = Path(tempfile.mkdtemp(prefix="ebspool-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(node, *args: str):
    return run_cli(*args, "-c", str(node.config_dir))


class Pinger:
    """Keeps a raw minion present with pings, reading (and never answering) what the master sends it."""

    def __init__(self, minion: Rogue) -> None:
        self.minion = minion
        self.fires: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.minion.send(protocol.PING_MESSAGE)
            for message in self.minion.drain():
                if message.kind == protocol.FIRE:
                    self.fires.append(message.value)
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def round_trip(master) -> float:
    """Seconds for an event fired on the master bus to come back to a new listener (no backlog of its own)."""
    with event.get_event("master", opts=master.opts()) as bus:
        bus.connect_pull()
        start = time.monotonic()
        assert bus.fire_event({"probe": start}, "probe/rt")
        got = bus.get_event(wait=10, tag="probe/rt")
        assert got is not None and got["probe"] == start, "the master bus did not answer within 10 s"
        return time.monotonic() - start


class Attacker:
    """The rogue's misbehaviour, one kind after another, each repeated so that a log line per message would show."""

    def __init__(self, rogue: Rogue) -> None:
        self.rogue = rogue
        self.jumps = 0
        # Built before the attack: the test process's own work is not what the latency should measure.
        self.oversize_batches = [
            [event_frame("rogue/many", {"n": n}) for n in range(protocol.MAX_BATCH_EVENTS + 1)],
            [event_frame("rogue/many", {"pad": "x" * 20_000})] * (protocol.MAX_BATCH_BYTES // 20_000 + 2),
            [event_frame("rogue/many", {"n": n}) for n in range(3000)]]

    def fresh(self, frames: list[bytes]) -> protocol.Message:
        """Send ``frames`` at new seqs of the rogue's stream (past the flood); the master's answer."""
        self.jumps += 1
        first = JUMP * self.jumps
        return self.rogue.batch(first, first - 1, frames)

    def malformed(self) -> None:
        for _ in range(10):
            for message in malformed_messages():
                self.rogue.send(message)
            # Seqs past 2**64 - 1, which no ack can carry.
            self.rogue.send(protocol.events(2 ** 64 - 1, 2 ** 64 - 2, [event_frame("rogue/wrap", {"n": 1})] * 2))
            self.rogue.sync()

    def bad_events(self) -> None:
        """Reserved and other minions' tags, broken frames, an event over max_event_size, and good ones."""
        frames = []
        for round_ in range(5):
            frames += [event_frame(tag, {"forged": True}) for tag in FORBIDDEN]
            frames += [b"no-nul-here", b"rogue/bad\x00\xc1", event_frame("rogue/list", [1, 2]),
                       b"\xff\xfe\x00" + event_frame("", {})[1:]]
            frames += [event_frame("rogue/ok", {"id": "h1", "round": round_})]
        big = event_frame("rogue/big", {"forged": True, "pad": "x" * MAX_EVENT_SIZE})
        for batch in (frames, [big], frames[:1] + [big]):
            answer = self.fresh(batch)
            assert answer.kind == protocol.ACK, answer

    def oversize(self) -> None:
        # Batches bigger than a minion ever sends (in events, in bytes, and far over): refused whole, unanswered.
        for frames in self.oversize_batches * 2:
            self.rogue.send(protocol.events(JUMP, JUMP - 1, frames))
        self.rogue.sync()
        # A frame over max_event_size + 4 kB: ZeroMQ drops the connection; the rogue's socket reconnects.
        self.rogue.send([protocol.EVENTS, protocol.BATCH_HEADER.pack(1, 0), b"x" * (MAX_EVENT_SIZE + 8192)])
        self.rogue.sync(timeout=15)

    def replay(self) -> None:
        """Relay marked events, report a spool head past them, then replay their seqs."""
        self.jumps += 1
        first = JUMP * self.jumps
        marked = [event_frame("rogue/replay", {"n": n}) for n in range(5)]
        assert self.rogue.batch(first, first - 1, marked).kind == protocol.ACK
        head = first + 10 ** 9  # past where the flood, following the acks, numbers on
        assert self.rogue.batch(head + 1, head, [event_frame("rogue/replay", {"n": 5})]).kind == protocol.ACK
        for floor in range(20):
            assert self.rogue.batch(first, floor, marked).value > head

    def claims(self, other: str) -> None:
        """Say hello as another minion, relay as it, then come back as itself."""
        for _ in range(10):
            self.rogue.send(protocol.hello(other))
            assert self.rogue.expect(protocol.WELCOME).value["result"] == "denied"
            self.rogue.send(protocol.events(JUMP * 99, JUMP * 99 - 1, [event_frame("rogue/claimed", {"as": other}),
                                                                          event_frame(f"salt/minion/{other}/x",
                                                                                      {"forged": True})]))
            self.rogue.sync()
        assert self.rogue.hello().value["result"] == "accept"

    def answer_fires(self, master, target: str) -> subprocess.CompletedProcess:
        """While ``eventbus fire --target`` waits for ``target``, acknowledge every fire job id, as itself and as it."""
        proc = subprocess.Popen([EVENTBUS, "fire", '{"x": 1}', "rogue/fire-test", "--node", "master",
                                 "--target", target, "--timeout", "2", "-c", str(master.config_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            for job in range(1, 20):
                self.rogue.send(protocol.fired(job))
            self.rogue.send(protocol.hello(target))
            assert self.rogue.expect(protocol.WELCOME).value["result"] == "denied"
            for job in range(1, 20):
                self.rogue.send(protocol.fired(job))
            assert self.rogue.hello().value["result"] == "accept"
            time.sleep(0.1)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_rogue_accepted_minion_disturbs_no_one_and_gets_nothing(site, spools):
    master = site.master(max_event_size=MAX_EVENT_SIZE)
    master.start()
    honest = [site.minion(minion_id, cachedir=str(spools / minion_id)) for minion_id in HONEST]
    for node in honest:
        node.start()
    rogue = Rogue(master, "rogue")
    quiet = Rogue(master, "quiet")
    pinger = flood = traffic = None
    try:
        assert rogue.hello().value["result"] == "pend"
        assert quiet.hello().value["result"] == "pend"
        for node in honest:
            wait_link(node, "pend")
        accepted = cli(master, "key", "--accept-all")
        assert accepted.returncode == 0, accepted.stderr
        for node in honest:
            wait_link(node, "accept")
        assert rogue.expect(protocol.WELCOME).value["result"] == "accept"
        assert quiet.expect(protocol.WELCOME).value["result"] == "accept"
        pinger = Pinger(quiet)

        attacker = Attacker(rogue)
        traffic = HonestTraffic(master, honest)
        # 3 s before and 8 s during (150 events/s): long enough that one short stall of the host is not the p99.
        wait_for(lambda: traffic.count("before") >= 450, timeout=30, what="450 events before")
        relayed = master_link(master)["relayed"]
        flood = Flood(master.path, rogue.key_dir, "rogue")
        flood_started = time.monotonic()
        wait_for(lambda: master_link(master)["relayed"] > relayed + 20_000, timeout=15, what="the flood")
        traffic.phase("during")
        attack_started = time.monotonic()

        trips = [round_trip(master)]
        steps = []  # (monotonic start, attack): what a latency failure is shown against
        for name, attack in (("malformed", attacker.malformed), ("bad events", attacker.bad_events),
                             ("oversize", attacker.oversize), ("replay", attacker.replay),
                             ("claims", lambda: attacker.claims("h1"))):
            steps.append((time.monotonic(), name))
            if name in ("bad events", "replay"):
                # The flood keeps the rogue's relay budget spent; these attacks need the master to read
                # their batches, so they run while the flood holds still and the budget refills.
                flood.pause()
                time.sleep(0.5)
                try:
                    attack()
                finally:
                    flood.resume()
            else:
                attack()
            trips.append(round_trip(master))
        steps.append((time.monotonic(), "fires"))
        fired = attacker.answer_fires(master, "quiet")
        trips.append(round_trip(master))
        attack_took = time.monotonic() - attack_started
        steps.append((time.monotonic(), "flood only"))
        wait_for(lambda: traffic.count("during") >= 1200, timeout=40, what="1200 events during")
        flooded = master_link(master)["relayed"] - relayed
        flood_took = time.monotonic() - flood_started
        traffic.phase("after")
        sent = flood.stop()
        flood = None
        seen = traffic.stop()
        traffic = None
    finally:
        for part in (pinger, flood):
            if part is not None:
                part.stop()
        if traffic is not None:
            traffic.kill()
        rogue.close()
        quiet.close()

    assert master.daemon.alive(), master.daemon.log[-3000:]
    # The flood went on through the attack, and the master relayed it up to the rogue's budget (20,000 events/s,
    # 40,000 at once; the count also holds the honest minions' events and the attacks').
    assert sent["events"] > 10_000 and flooded > 10_000, (flooded, sent)
    assert flooded <= 20_000 * flood_took + 40_000 + 5_000, (flooded, sent, flood_took)

    # Every honest event arrived, once, in order, under its own minion's id.
    assert not seen["errors"], seen["errors"]
    for minion_id in HONEST:
        assert seen["seen"][minion_id] == list(range(seen["fired"][minion_id])), minion_id

    # Relay latency during the attack: the honest minions are not starved. A master that makes the others
    # wait for the flood's work is seconds over (its loop held by the link); how close during stays to
    # before is a speed figure for a benchmark, not for a test on a shared 2-core host, where a loaded run
    # (load 4-17) shows p99s of 4-100 ms before and stalls of 50-170 ms for a core or the disk during.
    before, during = p99(seen["latency"]["before"]), p99(seen["latency"]["during"])
    slowest = [f"{latency * 1000:.0f} ms {minion_id} #{n} at {seen_at - attack_started:+.2f} s"
               for latency, seen_at, minion_id, n in seen["slowest"][:8]]
    print(f"relay p99: {before * 1000:.1f} ms before, {during * 1000:.1f} ms during the attack")
    assert during <= before + 1.0, (
        f"relay p99 {before * 1000:.1f} ms before, {during * 1000:.1f} ms during; slowest: {slowest}; attacks from: "
        f"{[(f'{at - attack_started:+.2f} s', name) for at, name in steps]}")
    # The master's own bus stays responsive while the link is flooded.
    assert max(trips) < 2.0, f"fire_event round trips during the flood: {trips}"

    # Nothing forged reached the master bus; whatever the rogue relayed carries its own id.
    rogue_events = [e for e in seen["others"] if e["data"].get("cmd") == "_minion_event"]
    assert not [e for e in seen["others"] if "forged" in str(e["data"])], "a forged event reached the bus"
    assert {e["data"]["id"] for e in rogue_events if e["tag"].startswith("rogue/")} == {"rogue"}
    assert sorted(e["data"]["data"]["round"] for e in rogue_events if e["tag"] == "rogue/ok") == list(range(5))
    assert all(e["data"]["data"]["id"] == "h1" for e in rogue_events if e["tag"] == "rogue/ok")
    # Replayed seqs were not published again; claimed ids, oversize batches and wrapped seqs relayed nothing.
    assert sorted(e["data"]["data"]["n"] for e in rogue_events if e["tag"] == "rogue/replay") == list(range(6))
    assert not [e for e in rogue_events if e["tag"] in ("rogue/claimed", "rogue/many", "rogue/wrap", "rogue/big")]
    # The fire reached quiet, which never answered: the rogue's acknowledgements count for nothing.
    assert pinger.fires, "the fire never reached its target"
    assert fired.returncode == 1 and fired.stdout.strip() == "quiet: False", (fired.stdout, fired.stderr)
    assert "quiet" in fired.stderr
    keys = cli(master, "key", "--list").stdout.splitlines()
    assert keys[:keys.index("Denied Keys:")] == ["Accepted Keys:", "h1", "h2", "h3", "quiet", "rogue"]

    # One log line per kind of misbehaviour names the rogue, whatever the number of messages (nor a second
    # one after the flood went on alone).
    assert attack_took < 10, "the attack outlasted one log interval: its kinds may be logged twice"
    log = master.daemon.log
    lines = [line for line in log.splitlines() if "'rogue'" in line and "[ERROR]" in line]
    counts = {kind: sum(bool(re.search(pattern, line)) for line in lines) for kind, pattern in KINDS.items()}
    # The flood reaches its relay budget only on a host fast enough to send that much: "budget" at most once.
    expected = {**dict.fromkeys(KINDS, 1), "budget": min(counts["budget"], 1)}
    assert counts == expected and len(lines) == sum(expected.values()), "\n".join(lines)
    assert "Traceback" not in log
    # No line blames anyone else: the ids the rogue claimed appear only beside its own.
    assert not [line for line in log.splitlines() if "[ERROR]" in line and "'rogue'" not in line]


def test_a_rogue_hanging_up_on_a_full_queue_does_not_end_the_master():
    """It floods until the master holds a full queue of its messages, then hangs up: again and again."""
    site = Site()  # short heartbeats: the master's timers fall due while it works through the queue
    try:
        # No relay budget: a batch refused over it would turn the rest of each cycle's stream into gaps, and
        # what this test needs is a master working through a full queue of batches it takes.
        master = site.master(auto_accept=True, relay_rate_limit=0)
        master.start()
        frames = [event_frame("rogue/fill", {"n": n}) for n in range(protocol.MAX_BATCH_EVENTS)]
        key_dir, first = None, 1
        for cycle in range(6):
            master.daemon.check_alive()
            rogue = Rogue(master, "rogue", key_dir)
            key_dir = rogue.key_dir
            try:
                # Answered while the master still works through the queue the last connection left.
                assert rogue.hello().value["result"] == "accept", f"cycle {cycle}: {master.daemon.log[-2000:]}"
                rogue.socket.setsockopt(zmq.SNDHWM, 0)
                relayed = master_link(master)["relayed"]
                for _ in range(1500):
                    rogue.send(protocol.events(first, first - 1, frames))
                    first += len(frames)
                wait_for(lambda: master.daemon.check_alive() or master_link(master)["relayed"] > relayed + 10_000,
                         timeout=15, what="the master working through the flood")
            finally:
                rogue.close()
        last = Rogue(master, "rogue", key_dir)
        try:
            assert last.hello().value["result"] == "accept"
            last.sync()
        finally:
            last.close()
        assert master.daemon.alive() and "Assertion failed" not in master.daemon.log, master.daemon.log[-2000:]
    finally:
        site.cleanup()


def journal_turns(master) -> list[int]:
    """How many events each append to the master's journal held, in order: a turn's events go in one write
    (``daemon/link/master.py``), every record of it with that write's time."""
    from bench import journaltimes

    sizes: list[int] = []
    last_time = None
    for _seq, written, _frame in journaltimes.records(master.settings.journal_dir):
        if written == last_time:
            sizes[-1] += 1
        else:
            sizes.append(1)
            last_time = written
    return sizes


def test_a_turn_of_the_master_takes_about_two_batches_however_a_minion_frames_them(site):
    """A ``batch`` message carries a hundred events in one frame. The master's turn is bounded by events,
    not frames: a minion that queues many such messages holds a turn (the bus, the other minions) for about
    two batches, not for the 64 messages a turn may read (6,400 events, tens of ms)."""
    from eventbus.daemon.link.master import TURN_FRAMES

    master = site.master(auto_accept=True, relay_rate_limit=0)
    master.start()
    rogue = Rogue(master, "rogue")
    try:
        assert rogue.hello().value["result"] == "accept"
        batches, size = 40, protocol.MAX_BATCH_EVENTS
        for number in range(batches):
            first = 1 + number * size
            rogue.send(protocol.packed_events(first, first - 1, [
                event_frame("salt/minion/rogue/t", {"n": n}) for n in range(first, first + size)]))
        wait_for(lambda: master_link(master)["relayed"] >= batches * size, 30, what="every batch relayed")
    finally:
        rogue.close()
    turns = journal_turns(master)
    assert sum(turns) >= batches * size
    assert max(turns) <= TURN_FRAMES + protocol.MAX_BATCH_EVENTS, turns
