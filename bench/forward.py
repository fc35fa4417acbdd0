"""The forwarder against bare clients writing the same events with the same guarantee: ``python -m bench.forward``.

Figures (each against a reference measured in the same run):

- per sink, lossless throughput: events already in the master's journal are
  drained by a freshly started ``eventbus forward`` into the sink, against a
  bare client writing the same records with the same guarantee (a plain file
  writer with fsync per batch; sqlite3 / psycopg batched inserts, one
  transaction per batch, skipping seqs already there; an HTTP client POSTing
  each event and waiting for its 2xx);
- fire -> sink p99 at 500 events/s;
- the bus's zero-loss throughput with three forwarders attached, against
  the same bus without them.

``SINKS`` maps a sink type to its broker block, its bare reference, its
arrival reader (for latency) and its target; other sink types (pika, kafka,
nats) plug in by adding an entry.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

from bench import report
from bench.bus import zero_loss_rates
from bench.clients import Crew
from bench.forward_sinks import (PAD, PG, FileArrivals, HookServer, PostgresArrivals, SqliteArrivals, WebhookArrivals,
                                 records, ref_file, ref_postgresql, ref_sqlite, ref_webhook)
from bench.measure import Pacer, load_note, percentile, venv_bin, wait_until
from bench.procs import Daemon, short_tmpdir
from bench.report import Row
from bench.systems import running_bus

TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0
TARGET_BUS = 0.9


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the sinks -----------------------------------------------------------------------------------------


@dataclass
class SinkBench:
    """How to benchmark one sink type: its broker block, its bare reference, how to see arrivals."""

    broker: Callable[[Path, dict], dict]          # (root, context) -> broker block
    reference: Callable[[Path, list], float]      # (root, events) -> seconds to write them all
    arrivals: Callable[[Path, dict], Callable]    # (root, context) -> poll for newly arrived data
    events: int                                   # how many for the throughput run
    floor: float                                  # events/s the issue asks for at least
    setup: Callable[[], dict] = dict              # -> context (a schema, a server...)
    teardown: Callable[[dict], None] = lambda context: None


def _pg_setup() -> dict:
    import psycopg

    schema = "benchfwd_" + uuid.uuid4().hex[:8]
    with psycopg.connect(**PG, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return {"schema": schema}


def _pg_teardown(context: dict) -> None:
    import psycopg

    with psycopg.connect(**PG, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {context['schema']} CASCADE")


SINKS: dict[str, SinkBench] = {
    "file": SinkBench(lambda root, c: {"type": "file", "path": str(root / "out.jsonl")}, ref_file, FileArrivals,
                      200_000, 100_000),
    "sql (SQLite)": SinkBench(lambda root, c: {"type": "sql", "dialect": "sqlite", "db": str(root / "out.db")},
                              ref_sqlite, SqliteArrivals, 100_000, 30_000),
    "sql (PostgreSQL)": SinkBench(
        lambda root, c: {"type": "sql", "url": f"postgresql://postgres@127.0.0.1:5432/test"
                                               f"?options=-csearch_path%3D{c['schema']}"},
        ref_postgresql, PostgresArrivals, 100_000, 20_000, _pg_setup, _pg_teardown),
    "webhook": SinkBench(lambda root, c: {"type": "webhook", "url": f"http://127.0.0.1:{c['hook'].port}/hook"},
                         ref_webhook, WebhookArrivals, 3_000, 0, lambda: {"hook": HookServer()},
                         lambda c: c["hook"].close()),
}


# -- the forwarder beside a master -----------------------------------------------------------------


class Forward:
    """An ``eventbus forward`` process on its own root, reading the master of ``master_config``."""

    def __init__(self, master_config: str, brokers: list[dict], root: Path | None = None) -> None:
        self.root = root or short_tmpdir("ebf")
        conf = self.root / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "forward").write_text(yaml.safe_dump({"root_dir": str(self.root), "log_level": "warning",
                                                       "master_config": master_config, "brokers": brokers}))
        self.sock_dir = self.root / "var/run/eventbus/forward"
        self.daemon = Daemon([venv_bin("eventbus"), "forward", "-c", str(conf)], self.root / "forward.log")

    def start(self) -> "Forward":
        self.daemon.start()
        wait_until(self._answers, 30, "eventbus forward to answer")
        return self

    def _answers(self) -> bool:
        from eventbus.bus import control, wire
        from eventbus.errors import BusUnavailableError

        self.daemon.check_alive()
        try:
            control.request(self.sock_dir, wire.VERB_PING, timeout=0.5)
            return True
        except BusUnavailableError:
            return False

    def delivered(self) -> int:
        from eventbus.bus import control, wire

        return sum(b["delivered"] for b in control.request(self.sock_dir, wire.VERB_STATS, timeout=5)["brokers"])

    def stop(self) -> None:
        self.daemon.stop()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def fire(master_config: str, count: int, rate: float | None = None, timed: bool = False) -> None:
    from eventbus import config
    from eventbus.event import MasterEvent

    settings = config.load(config.MasterConfig, master_config)
    pacer = Pacer(rate)
    with MasterEvent(settings.sock_dir, opts=settings, listen=False) as bus:
        for n in range(count):
            pacer.wait(n)
            data = {"n": n, "pad": PAD}
            if timed:
                data["t"] = time.time()
            assert bus.fire_event(data, "bench/fwd", timeout=10_000)


def forwarder_throughput(kind: str, bench: SinkBench, master_config: str, events: int) -> float:
    """Events/s a forwarder drains from the journal into the sink, lossless (every event, checked)."""
    root = short_tmpdir("ebf")
    context = bench.setup()
    forward = Forward(master_config, [{"name": "b", **bench.broker(root, context)}], root)
    try:
        forward.start()
        forward.stop()  # the broker now has its cursor at the head; what comes next waits in the journal
        fire(master_config, events)
        time.sleep(0.5)  # let the master's journal take the last batch
        forward.start()  # from its answer on: the reader reads the journal, the drain writes the sink
        first = 0
        started = time.perf_counter()
        wait_until(lambda: forward.delivered() >= events, 600, f"{kind}: {events:,} delivered", 0.005)
        elapsed = time.perf_counter() - started
        poll = bench.arrivals(root, context)
        seen = []
        while len(seen) < events:
            more = poll()
            if not more:
                break
            seen.extend(d if isinstance(d, dict) else d[1] for d in more)
        numbers = [d["n"] for d in seen]
        if numbers != list(range(events)):
            raise AssertionError(f"{kind}: {len(numbers)} events arrived, not 0..{events - 1} in order")
        return (events - first) / elapsed
    finally:
        forward.stop()
        forward.remove()
        bench.teardown(context)


def reference_throughput(bench: SinkBench, events: int) -> float:
    root = short_tmpdir("ebq")
    try:
        return events / bench.reference(root, records(events))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def latency_p99(kind: str, bench: SinkBench, master_config: str, rate: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) ms from ``fire_event`` to the event being readable in the sink, at ``rate`` events/s."""
    root = short_tmpdir("ebf")
    context = bench.setup()
    forward = Forward(master_config, [{"name": "b", **bench.broker(root, context)}], root)
    count = int(rate * seconds)
    delays: list[float] = []
    try:
        forward.start()
        poll = bench.arrivals(root, context)
        firing = threading.Thread(target=fire, args=(master_config, count, rate, True))
        firing.start()
        deadline = time.monotonic() + seconds + 60
        while len(delays) < count and time.monotonic() < deadline:
            now = time.time()
            for item in poll():
                when, data = item if isinstance(item, tuple) else (now, item)
                delays.append((when - data["t"]) * 1000)
            time.sleep(0.001)
        firing.join()
        if len(delays) < count:
            raise AssertionError(f"{kind}: only {len(delays)} of {count} events arrived")
        return percentile(delays, 50), percentile(delays, 99)
    finally:
        forward.stop()
        forward.remove()
        bench.teardown(context)


def sink_rows(kinds: Sequence[str], scale: float, seconds: float) -> list[Row]:
    rows = []
    with running_bus() as (_daemon, target):
        for kind in kinds:
            bench = SINKS[kind]
            events = max(1000, int(bench.events * scale))
            progress(f"{kind}: {events:,} events, forwarder vs bare client")
            theirs = reference_throughput(bench, events)
            ours = forwarder_throughput(kind, bench, target.where, events)
            progress(f"  forwarder {ours:,.0f}/s, bare {theirs:,.0f}/s")
            floor = f" and ≥ {bench.floor:,.0f}/s" if bench.floor else ""
            rows.append(Row(f"{kind}: lossless throughput", "events/s", ours, theirs,
                            f"≥ {TARGET_RATIO:.0%} of bare{floor}",
                            ours >= TARGET_RATIO * theirs and ours >= bench.floor))
            p50, p99 = latency_p99(kind, bench, target.where, 500, seconds)
            progress(f"  fire -> sink at 500/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            rows.append(Row(f"{kind}: fire → sink p99 at 500/s", "ms", p99, None, f"≤ {TARGET_P99_MS:g} ms",
                            p99 <= TARGET_P99_MS))
    return rows


def bus_rows(seconds: float, steps: int) -> list[Row]:
    """The bus's zero-loss throughput (1->1, 100 B) with three forwarders attached vs none, trial for trial."""
    kinds = ("with", "without")
    with running_bus() as (with_daemon, with_target), running_bus() as (without_daemon, without_target):
        forwards = [Forward(with_target.where, [{"name": "f", "type": "file", "path": "out.jsonl"}]).start()
                    for _ in range(3)]
        meters = {"with": with_daemon.meter(), "without": without_daemon.meter()}
        crews = {"with": Crew(with_target, 1, 1), "without": Crew(without_target, 1, 1)}
        try:
            for crew in crews.values():
                crew.warm()
            progress("bus throughput with three forwarders attached vs without")
            found = zero_loss_rates(crews, meters, 100, seconds, steps, kinds)
        finally:
            for crew in crews.values():
                crew.close()
            for forward in forwards:
                forward.stop()
                forward.remove()
    ours, theirs = found["with"].rate, found["without"].rate
    progress(f"  with {ours:,.0f}/s, without {theirs:,.0f}/s")
    return [Row("bus zero-loss throughput 1→1 100 B, three forwarders attached", "events/s", ours, theirs,
                f"≥ {TARGET_BUS:.0%} of without", bool(theirs) and ours >= TARGET_BUS * theirs)]


def outage_rows(seconds: float, rate: int = 500) -> list[Row]:
    """PostgreSQL cut off (a proxy) for ``seconds`` while ``rate`` events/s flow: all delivered after, in order."""
    from bench.tcpproxy import TcpProxy

    count = int(seconds * rate)
    context = _pg_setup()
    proxy = TcpProxy(5432).start()
    root = short_tmpdir("ebf")
    broker = {"name": "pg", "type": "sql",
              "url": f"postgresql://postgres@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{context['schema']}"}
    try:
        with running_bus() as (_daemon, target):
            forward = Forward(target.where, [broker], root).start()
            try:
                progress(f"outage: PostgreSQL cut for {seconds:g} s while {rate}/s flow ({count:,} events)")
                proxy.cut()
                fire(target.where, count, rate)
                proxy.restore()
                restored = time.perf_counter()
                wait_until(lambda: forward.delivered() >= count, 300, f"{count:,} delivered after the outage", 0.01)
                catch_up = time.perf_counter() - restored
            finally:
                forward.stop()
        poll = PostgresArrivals(root, context)
        numbers = [d["n"] for d in poll()]
        in_order = numbers == list(range(count))
        progress(f"  {len(numbers):,} rows after the outage, in order: {in_order}; caught up in {catch_up:.1f} s")
        return [Row(f"{seconds:g} s PostgreSQL outage at {rate}/s: events in the table afterwards, in order",
                    "events", len(numbers) if in_order else 0, count, f"{count:,} of {count:,}", in_order),
                Row("  ... catch-up after the outage", "s", catch_up)]
    finally:
        proxy.close()
        _pg_teardown(context)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the forwarder benchmark; print and return its Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.forward", description=__doc__.splitlines()[0])
    parser.add_argument("--sinks", nargs="*", default=list(SINKS), choices=list(SINKS), help="sinks to run (all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply each sink's event count (1.0)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="length of the 500/s run (10)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one bus throughput trial (1.5)")
    parser.add_argument("--steps", type=int, default=5, help="paced bus trials after the flat-out probe (5)")
    parser.add_argument("--no-bus", action="store_true", help="skip the bus-with-forwarders figure")
    parser.add_argument("--outage-seconds", type=float, default=60.0, help="PostgreSQL outage length; 0 skips (60)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = load_note()
    rows = sink_rows(args.sinks, args.scale, args.latency_seconds)
    if not args.no_bus:
        rows += bus_rows(args.seconds, args.steps)
    if args.outage_seconds:
        rows += outage_rows(args.outage_seconds)
    text = "\n".join([
        "## Forwarders: each sink against a bare client with the same guarantee (same run)", "",
        "Reference column: a plain file writer with fsync per 1,000; sqlite3 / psycopg inserting batches of "
        "1,000 in one transaction each, skipping seqs already there; an HTTP client POSTing each event and "
        "waiting for its 2xx (keep-alive); for the bus figure, the same bus without forwarders.",
        "", report.table(rows, reference="reference"), "",
        f"Host: {load_before} at the start, {load_note()} at the end; took {time.perf_counter() - started:.0f} s.", ""])
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
