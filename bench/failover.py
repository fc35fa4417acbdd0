"""Benchmark: a failover minion fleet's relay before and after the live master is SIGKILLed.

``python -m bench.failover`` starts two real masters (A, B) and
``--minions`` (5) real minion daemons with ``master: [A, B]``,
``master_type: failover`` and ``master_alive_interval`` ``--alive`` (1 s).
Each minion relays ``--rate`` (200) numbered events/s through
``fire_master``; a subscriber on each master bus notes every event's
minion, number and arrival time (``bench.failovertraffic``). ``--seconds``
(20) / 2 after the traffic starts, master A gets SIGKILL; the traffic goes
on ``--seconds`` / 2 more, then the minions' spools drain and A's journal is
read (``eventbus.journal.reader``).

The reference, measured first in the same run: the same number of minions
at the same rate, each with one plain ``master: host`` and no kill, for
``--seconds`` / 2. Figures and targets are in ``bench.failoverreport``;
the table goes to stdout, the figures to ``bench/results/failover-<date>T<time>.json``
(``python -m bench.failoversummary FILE...`` puts several runs side by side).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from bench.failoverreport import analyse, report
from bench.failovertraffic import Traffic
from bench.measure import load_note, wait_until
from bench.procs import Node, link_state, short_tmpdir, wait_link

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 1.0  # s of traffic before the measured "before" window: first batches, first acks
DRAIN = 20.0  # s the spools may take to empty once the traffic stops (more: reported as not delivered)


def progress(text: str) -> None:
    print(f"failover: {text}", file=sys.stderr, flush=True)


class Run:
    """The nodes of one run (all in short temp dirs); spools in ``/dev/shm`` (see ``docs/bench.md``)."""

    def __init__(self, minions: int, rate: float, alive: float, seconds: float) -> None:
        self.count = minions
        self.rate = rate
        self.alive = alive
        self.half = seconds / 2
        self.nodes: list[Node] = []
        self.spools = Path(tempfile.mkdtemp(prefix="ebfo-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
        self.traffic: Traffic | None = None

    def master(self, label: str) -> Node:
        node = Node(short_tmpdir(f"ebf{label}"), "master", auto_accept=True, log_level="warning")
        self.nodes.append(node)
        return node

    def minion(self, minion_id: str, **keys: Any) -> Node:
        node = Node(short_tmpdir("ebfn"), "minion", id=minion_id, log_level="info",
                    cachedir=str(self.spools / minion_id), **keys)
        self.nodes.append(node)
        return node

    def start(self, nodes: list[Node]) -> None:
        for node in nodes:
            node.start(timeout=30)

    def drained(self, minions: list[Node]) -> dict[str, int]:
        """Wait until every minion's spool is empty (the live master acknowledged every event), at most ``DRAIN`` s;
        the events still spooled, per minion."""
        try:
            wait_until(lambda: all(link_state(m)["spooled"] == 0 for m in minions), DRAIN, "the spools to drain")
        except TimeoutError:
            progress(f"the minions' spools did not drain within {DRAIN:g} s")
        return {m.keys["id"]: link_state(m)["spooled"] for m in minions}

    def traffic_for(self, masters: dict[str, Node], minions: list[Node]) -> Traffic:
        self.traffic = Traffic(self.rate, {label: node.path for label, node in masters.items()},
                               [m.path for m in minions])
        return self.traffic

    def watch(self, until: float, what: str) -> None:
        """Sleep until ``until`` (monotonic), a progress line each second."""
        assert self.traffic is not None
        while (left := until - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            counts = self.traffic.ask("count")
            if counts.pop("errors"):
                raise RuntimeError(f"the traffic process failed: {counts}")
            progress(f"{what}: " + ", ".join(f"{n:,} on {label}" for label, n in counts.items()))

    def finish(self) -> dict:
        assert self.traffic is not None
        result = self.traffic.stop()
        self.traffic = None
        if result["errors"]:
            raise RuntimeError(f"the traffic process failed: {result['errors']}")
        return result

    # -- the two phases -------------------------------------------------------------------

    def reference(self) -> dict:
        """One master, plain ``master: host`` minions, no kill."""
        master = self.master("r")
        self.start([master])
        ports = {"master": "127.0.0.1", "ret_port": master.settings.ret_port,
                 "publish_port": master.settings.publish_port}
        minions = [self.minion(f"r{n + 1}", **ports) for n in range(self.count)]
        self.start(minions)
        for node in minions:
            wait_link(node, "accept", timeout=30)
        progress(f"reference: 1 master, {self.count} minions x {self.rate:g} events/s for {self.half:g} s")
        traffic = self.traffic_for({"ref": master}, minions)
        started = traffic.ask("fire")
        self.watch(started + WARMUP + self.half, "reference")
        halted = time.monotonic()
        traffic.ask("halt")
        spooled = self.drained(minions)
        seen = self.finish()
        reconnects = sum(len(_link_log(node, time.time())["reconnects"]) for node in minions)
        for node in [*minions, master]:
            node.stop()
        return {"traffic": seen, "started": started, "window": [started + WARMUP, halted], "spooled": spooled,
                "reconnects": reconnects}

    def failover(self) -> dict:
        """Masters A and B, failover minions; A is SIGKILLed halfway."""
        a, b = self.master("a"), self.master("b")
        self.start([a, b])
        items = [{"host": "127.0.0.1", "ret_port": m.settings.ret_port, "publish_port": m.settings.publish_port}
                 for m in (a, b)]
        minions = [self.minion(f"f{n + 1}", master=items, master_type="failover", master_alive_interval=self.alive)
                   for n in range(self.count)]
        self.start(minions)
        for node in minions:
            wait_until(lambda node=node: _on_a(node), 30, f"{node.keys['id']} to be accepted by master A")
        progress(f"failover: masters A and B, {self.count} minions x {self.rate:g} events/s, "
                 f"master_alive_interval {self.alive:g} s; SIGKILL to A after {self.half:g} s")
        traffic = self.traffic_for({"a": a, "b": b}, minions)
        started = traffic.ask("fire")
        self.watch(started + WARMUP + self.half, "before the kill")
        assert a.daemon is not None
        killed, killed_wall = time.monotonic(), time.time()
        a.daemon.kill()
        progress("SIGKILL sent to master A")
        self.watch(killed + self.half, "after the kill")
        halted = time.monotonic()
        traffic.ask("halt")
        spooled = self.drained(minions)
        seen = self.finish()
        lives = {node.keys["id"]: _live(node) for node in minions}
        journal = read_journal(a.settings.journal_dir)
        assert b.daemon is not None
        survivor = {"alive": b.daemon.alive(), "exit": b.daemon.proc.poll() if b.daemon.proc else None,
                    "log": b.daemon.log[-2000:], "replays": b.daemon.log.count("replayed relay seqs")}
        logs = {node.keys["id"]: _link_log(node, killed_wall) for node in minions}
        for node in [*minions, b]:
            node.stop()
        return {"traffic": seen, "started": started, "killed": killed, "halted": halted,
                "window": [started + WARMUP, killed], "journal": journal, "live": lives, "spooled": spooled,
                "survivor": survivor, "minion_logs": logs, "dirs": [str(node.root) for node in [a, b, *minions]]}

    def cleanup(self, keep: bool) -> None:
        if self.traffic is not None:
            self.traffic.kill()
        for node in reversed(self.nodes):
            if node.daemon is not None and node.daemon.alive():
                node.stop()
            node.cleanup(keep)
        shutil.rmtree(self.spools, ignore_errors=True)


def _on_a(node: Node) -> bool:
    """Whether the minion relays to master A, accepted; ``RuntimeError`` if it moved away before any traffic."""
    live = _live(node)
    if live is None or live == 0:
        return live == 0 and link_state(node)["state"] == "accept"
    moves = _link_log(node, time.time())["moves"]
    raise RuntimeError(f"{node.keys['id']} moved away from master A before the traffic started: "
                       f"{moves[0][1] if moves else 'no move in its log'}")


def _live(node: Node) -> int | None:
    """The index of the minion's live master (the one it relays to), if any."""
    live = [index for index, master in enumerate(link_state(node)["masters"]) if master["live"]]
    return live[0] if live else None


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \[[^]]*\]\[\w+\] (.*)$", re.MULTILINE)


def _link_log(node: Node, killed_wall: float) -> dict[str, list]:
    """The minion's moves to another master and its reconnects to the same one, as (s from the kill, line)."""
    assert node.daemon is not None
    out: dict[str, list] = {"moves": [], "reconnects": []}
    for stamp, millis, text in LOG_LINE.findall(node.daemon.log):
        at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000 - killed_wall
        if text.startswith("moving from the master"):
            out["moves"].append((round(at, 3), text))
        elif "has not answered for" in text and text.endswith("reconnecting"):
            out["reconnects"].append((round(at, 3), text))
    return out


def read_journal(directory: Path) -> dict[str, list[int]]:
    """The ``n`` of every ``failover/`` event in a (dead) master's journal, per minion, in journal order."""
    from eventbus.bus import payload, wire
    from eventbus.journal.reader import JournalReader

    reader = JournalReader(directory)
    out: dict[str, list[int]] = {}
    after = 0
    while True:
        chunk = reader.read(after, 5000)
        for seq, frame in chunk.events:
            _seq, _epoch, tag, raw = wire.split_bus_frame(frame)
            if tag.startswith(b"failover/"):
                data = payload.unpack_data(raw)
                out.setdefault(data["id"], []).append(data["data"]["n"])
            after = seq
        if chunk.at_end or not chunk.events:
            return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; the exit code is 1 when a target is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    parser.add_argument("--minions", type=int, default=5, help="minion daemons (default 5)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s each minion relays (default 200)")
    parser.add_argument("--alive", type=float, default=1.0, help="master_alive_interval, s (default 1)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="traffic before + after the kill, s (default 20); the reference runs half of it")
    parser.add_argument("--keep", action="store_true", help="keep the daemons' directories (their logs)")
    argv = list(argv) if argv is not None else []  # bench.run calls main() with none
    args = parser.parse_args(argv)
    if args.minions < 1 or args.rate <= 0 or args.alive <= 0 or args.seconds < 4:
        parser.error("--minions at least 1, --rate and --alive above 0, --seconds at least 4")
    load_before = load_note()
    begun = time.monotonic()
    run = Run(args.minions, args.rate, args.alive, args.seconds)
    keep = args.keep
    try:
        reference = run.reference()
        failover = run.failover()
        figures = analyse(reference, failover, args.alive)
        figures.update(minions=args.minions, rate=args.rate, alive=args.alive, seconds=args.seconds,
                       load_before=load_before, load_after=load_note(), took_s=time.monotonic() - begun,
                       date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       command="python -m bench.failover " + " ".join(argv))
        text, passed = report(figures)
        if not passed:
            keep = True  # the daemons' logs say what went wrong
            progress(f"a target was missed: the daemons' directories are kept: {failover['dirs']}")
    except BaseException:
        keep = True
        progress(f"failed: the daemons' directories are kept: {[str(node.root) for node in run.nodes]}")
        raise
    finally:
        run.cleanup(keep)
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"failover-{time.strftime('%Y-%m-%dT%H%M%S', time.gmtime())}.json"
    out.write_text(json.dumps(figures, indent=1, default=str))
    progress(f"figures written to {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
