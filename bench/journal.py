"""The master's journal, measured against the same bus without it and the bare proxy: ``python -m bench.journal``.

Figures (each against a reference measured in the same run):

- zero-loss throughput, 1->1 and 2->4, 100 B and 1 KB, journal on vs off;
  latency p99 at 500 events/s, on vs off (the systems take turns trial by
  trial, as in ``bench.bus``);
- flat out, 2 publishers -> 4 subscribers, 1 KB events: every event at every
  subscriber, in order, and the daemon's peak RSS; beside it, what the bare
  pyzmq proxy (Salt's design: no numbering, no replay) delivers;
- replay from the journal to one ``follow(0)`` reader, against reading the
  same journal files with the bare ``JournalReader``;
- master start to first round trip with a 1 GiB journal, against an empty one;
- journal bytes per 100-byte event against its bus frame.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from bench import report
from bench.bus import latencies_at, zero_loss_rates
from bench.clients import Crew
from bench.measure import MB, load_note, median
from bench.procs import short_tmpdir
from bench.report import Row
from bench.systems import first_round_trip, running_bus, running_reference

SIZES = (100, 1024)
TOPOLOGIES = ((1, 1), (2, 4))
FLAT_EVENTS = 200_000
REPLAY_EVENTS = 1_000_000
STARTS = 5

TARGET_THROUGHPUT = 0.8
TARGET_P99 = 1.25
TARGET_FLAT_RSS_MB = 100.0
TARGET_REPLAY = 200_000
TARGET_START_S = 1.0
TARGET_BYTES = 1.5


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def on_off(seconds: float, steps: int) -> list[Row]:
    """Zero-loss throughput and latency of the bus with the journal on and off, taking turns."""
    rows = []
    kinds = ("on", "off")
    with running_bus(event_journal=True) as (on_daemon, on_target), \
            running_bus(event_journal=False) as (off_daemon, off_target):
        meters = {"on": on_daemon.meter(), "off": off_daemon.meter()}
        targets = {"on": on_target, "off": off_target}
        for publishers, subscribers in TOPOLOGIES:
            crews = {kind: Crew(targets[kind], publishers, subscribers) for kind in kinds}
            try:
                for crew in crews.values():
                    crew.warm()
                for number, size in enumerate(SIZES):
                    progress(f"throughput {publishers}->{subscribers} {size} B, journal on vs off")
                    found = zero_loss_rates(crews, meters, size, seconds, steps, kinds if number % 2 else kinds[::-1])
                    ours, theirs = found["on"].rate, found["off"].rate
                    progress(f"  on {ours:,.0f}/s ({'; '.join(found['on'].trials)}); "
                             f"off {theirs:,.0f}/s ({'; '.join(found['off'].trials)})")
                    rows.append(Row(f"zero-loss throughput {publishers}→{subscribers}, {size} B", "events/s",
                                    ours, theirs, f"≥ {TARGET_THROUGHPUT:.0%} of off",
                                    bool(theirs) and ours >= TARGET_THROUGHPUT * theirs))
                if (publishers, subscribers) == (1, 1):
                    latency = latencies_at(crews, meters, 500, 8.0)
                    on, off = latency["on"], latency["off"]
                    progress(f"latency at 500/s: on p99 {on.p99_ms:.3f} ms, off p99 {off.p99_ms:.3f} ms")
                    rows.append(Row("latency p50 at 500/s, 1→1 100 B", "ms", on.p50_ms, off.p50_ms, ratio_as="times"))
                    rows.append(Row("latency p99 at 500/s, 1→1 100 B", "ms", on.p99_ms, off.p99_ms,
                                    f"≤ {TARGET_P99:g}× off", on.p99_ms <= TARGET_P99 * off.p99_ms and not on.missing,
                                    ratio_as="times"))
            finally:
                for crew in crews.values():
                    crew.close()
    return rows


def flat_out(events: int) -> list[Row]:
    """2 publishers -> 4 subscribers flat out, 1 KB: what every subscriber ends with, on the bus and the proxy."""
    rows = []
    seen: dict[str, tuple[int, int, int, float, float]] = {}
    for kind, running in (("bus", running_bus), ("reference", running_reference)):
        progress(f"flat out 2->4 1 KB, {events:,} events: {kind}")
        with running() as (daemon, target):
            meter = daemon.meter()
            with Crew(target, 2, 4) as crew:
                crew.warm()
                result = crew.trial(1024, None, 600, count=events // 2)
            worst = min(s["received"] for s in result.seen)
            disorder = result.disorder
            seen[kind] = (result.sent, worst, disorder, result.rate, meter.peak_rss() / MB)
            progress(f"  sent {result.sent:,} at {result.rate:,.0f}/s; least received {worst:,}; "
                     f"out of order {disorder}; RSS {seen[kind][4]:.1f} MB")
    sent, worst, disorder, rate, rss = seen["bus"]
    ref_sent, ref_worst, _ref_disorder, ref_rate, ref_rss = seen["reference"]
    rows.append(Row(f"flat out 2→4 1 KB: share of {events:,} events at the worst subscriber", "%",
                    100.0 * worst / sent, 100.0 * ref_worst / ref_sent, "100% (0 lost), in order",
                    worst == sent and disorder == 0, ratio_as="times"))
    rows.append(Row("flat out 2→4 1 KB: publish rate", "events/s", rate, ref_rate))
    rows.append(Row("flat out 2→4 1 KB: daemon peak RSS", "MB", rss, ref_rss, f"≤ {TARGET_FLAT_RSS_MB:g} MB",
                    rss <= TARGET_FLAT_RSS_MB, ratio_as="times"))
    return rows


def replay(events: int) -> list[Row]:
    """A journal of ``events`` 100 B events read back by ``follow(0)``, against the bare reader; its size."""
    from eventbus import config, event
    from eventbus.bus import wire
    from eventbus.journal.reader import JournalReader

    rows = []
    with running_bus() as (_daemon, target):
        progress(f"replay: publishing {events:,} events of 100 B")
        with Crew(target, 1, 0) as crew:
            sent = crew.trial(100, None, 300, count=events).sent
        settings = config.load(config.MasterConfig, target.where)
        opts = config.to_dict(settings)
        reader = JournalReader(settings.journal_dir)
        deadline = time.monotonic() + 60
        while reader.stats().events < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = reader.stats()
        frame = stats.bytes and reader.read(0, 1).events[0][1]
        progress(f"replay: {stats.events:,} events, {stats.bytes / MB:.1f} MB in {stats.segments} segments")

        started = time.perf_counter()
        after, bare = 0, 0
        while True:
            page = reader.read(after, 5000)
            if not page.events:
                break
            bare += len(page.events)
            after = page.events[-1][0]
        bare_rate = bare / (time.perf_counter() - started)

        got = 0
        with event.get_event("master", opts=opts) as bus:
            started = time.perf_counter()
            for record in bus.follow(0):
                if record["seq"] is not None:
                    got += 1
                    if got == stats.events:
                        break
            follow_rate = got / (time.perf_counter() - started)
        progress(f"replay: follow(0) {follow_rate:,.0f}/s, bare JournalReader {bare_rate:,.0f}/s")
        rows.append(Row(f"replay from the journal to one follow(0) reader, {got:,} events", "events/s",
                        follow_rate, bare_rate, f"≥ {TARGET_REPLAY:,}/s", follow_rate >= TARGET_REPLAY))
        per_event = stats.bytes / stats.events
        frame_size = len(frame) if frame else float("nan")
        assert frame and len(frame) >= wire.HEADER_SIZE
        rows.append(Row("journal bytes per 100 B event vs its bus frame", "bytes", per_event, frame_size,
                        f"≤ {TARGET_BYTES:g}× the frame", per_event <= TARGET_BYTES * frame_size, ratio_as="times"))
    return rows


def big_journal(path: Path, gib: float) -> int:
    """Write about ``gib`` GiB of 100 B events into a journal at ``path`` the way the master does; its events."""
    from eventbus.daemon.journal.writer import Journal
    from eventbus.bus import payload, wire

    journal = Journal(path, int(gib * 1.1 * (1 << 30)), 86400 * 365, "never")
    journal.open()
    epoch = time.time_ns() // 1000 - 10_000_000_000
    raw_tag, raw_data = payload.pack_event("bench/big", {"x": "x" * 70}, 1 << 20)
    body = wire.publish_frame(raw_tag, raw_data)
    header = wire.HEADER.pack
    seq, target = epoch, int(gib * (1 << 30))
    written = 0
    while written < target:
        batch = [(s, header(s, epoch) + body) for s in range(seq + 1, seq + 257)]
        journal.append(batch)
        seq += 256
        written += 256 * (len(body) + wire.HEADER_SIZE + 28)
        if not seq % (1 << 20):
            progress(f"  {written / (1 << 30):.2f} GiB")
    journal.close()
    return seq - epoch


def start_with_big_journal(gib: float, starts: int) -> list[Row]:
    """Master start to first round trip with a ``gib`` GiB journal, against an empty one."""
    root = short_tmpdir("ebg")
    try:
        progress(f"writing a {gib:g} GiB journal")
        count = big_journal(root / "journal", gib)
        progress(f"  {count:,} events")
        full, empty = [], []
        for _ in range(starts):
            full.append(first_round_trip("bus", journal_dir=str(root / "journal"), journal_max_bytes=int(gib * 1.1 * (1 << 30))))
            empty.append(first_round_trip("bus"))
        progress(f"first round trip: with the journal {full}, empty {empty}")
        ours, theirs = median(full), median(empty)
        return [Row(f"master start to first round trip with a {gib:g} GiB journal (median of {starts})", "s",
                    ours, theirs, f"≤ {TARGET_START_S:g} s", ours <= TARGET_START_S, ratio_as="times")]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> str:
    """Run the journal benchmark; print and return its Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one throughput trial (1.5)")
    parser.add_argument("--steps", type=int, default=5, help="paced trials after the flat-out probe (5)")
    parser.add_argument("--flat-events", type=int, default=FLAT_EVENTS, help=f"flat-out events ({FLAT_EVENTS:,})")
    parser.add_argument("--replay-events", type=int, default=REPLAY_EVENTS,
                        help=f"events replayed from the journal ({REPLAY_EVENTS:,})")
    parser.add_argument("--journal-gib", type=float, default=1.0, help="journal size for the start test (1)")
    parser.add_argument("--starts", type=int, default=STARTS, help="cold starts timed (5)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = load_note()
    rows = on_off(args.seconds, args.steps)
    rows += flat_out(args.flat_events)
    rows += replay(args.replay_events)
    rows += start_with_big_journal(args.journal_gib, args.starts)
    text = "\n".join([
        "## The journal: the bus with it on vs off, and its reader (same run)", "",
        "Reference column: the same bus with `event_journal: false` for throughput and latency; the bare "
        "pyzmq proxy for the flat-out run; the bare `JournalReader` for replay; an empty journal for the start.",
        "", report.table(rows, reference="reference"), "",
        f"Host: {load_before} at the start, {load_note()} at the end; took {time.perf_counter() - started:.0f} s.", ""])
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
