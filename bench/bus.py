"""The local bus against the bare pyzmq proxy, in one run: ``python -m bench.bus``.

Figures (see docs/bench.md for what each one means):

- zero-loss sustained throughput, 1->1 and 2->4, 100 B and 1 KB events: a
  flat-out probe, then a search over paced rates; the figure is the highest
  rate at which a run of ``--seconds`` lost nothing and kept every
  publisher's order at every subscriber;
- latency p50/p99 at a fixed 500 and 2,000 events/s (1->1, 100 B);

The two systems take turns trial by trial (and in short latency segments),
so load from elsewhere on a shared host falls on both alike.
- daemon CPU per event, peak RSS, RSS under a stalled subscriber while
  1,000,000 events pass, and start-to-first-round-trip time.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from bench import report
from bench.clients import Crew, Target, TrialResult
from bench.measure import MB, ProcessMeter, load_note, median, percentile
from bench.report import Row
from bench.systems import first_round_trip, running_bus, running_reference

SIZES = (100, 1024)
TOPOLOGIES = ((1, 1), (2, 4))
LATENCY_RATES = ((500, 8.0), (2000, 6.0))
LATENCY_SEGMENTS = 8
KINDS = ("bus", "reference")
# A search stops once the lossless and lossy rates are this close (relative).
RESOLUTION = 0.05
# A lossless trial counts only if every subscriber had its last event within this long after the publishers
# stopped (or this share of the trial, if longer): one that fell behind and caught up later did not sustain it.
MAX_LAG_S = 0.1
MAX_LAG_SHARE = 0.1
STALL_EVENTS = 1_000_000
STALL_CHUNK = 50_000
# After this many events every queue the stalled subscriber can fill is full.
STALL_SETTLED = 200_000
STALL_FLAT_MB = 2.0
STARTS = 5

# Issue 14's targets: zero-loss rate as a share of the reference's, by topology; daemon CPU per event at the
# fixed latency rates as a multiple of the reference's.
TARGET_THROUGHPUT = {(1, 1): 0.7, (2, 4): 0.8}
TARGET_QUIET_CPU = 1.3
TARGET_P99 = 2.0
TARGET_CPU_US = 20.0
TARGET_START_S = 0.25
TARGET_RSS_MB = 60.0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Search:
    """A search for the highest lossless rate of one scenario, one trial at a time.

    First a flat-out probe, then paced trials: from 90% of the slowest
    subscriber's delivered rate after a lossy probe, 25% above the best
    lossless rate while nothing was lossy, else bisecting between the best
    lossless and the lowest lossy rate. It ends after ``steps`` paced
    trials, at ``RESOLUTION``, or once the publishers twice lost nothing
    at all the speed they had (they, not the bus, set the pace).
    """

    steps: int
    best: TrialResult | None = None
    best_cpu: float = float("nan")
    trials: list[str] = field(default_factory=list)
    done: bool = False
    next_rate: float | None = None  # None: flat out
    lossless_rate: float = 0.0
    lossy_rate: float = float("inf")
    publisher_bound: int = 0

    @property
    def rate(self) -> float:
        return self.best.rate if self.best else 0.0

    @property
    def cpu_per_event_us(self) -> float:
        return self.best_cpu / self.best.sent * 1e6 if self.best and self.best.sent else float("nan")

    def record(self, result: TrialResult, cpu: float) -> None:
        """Take the outcome of a trial at ``next_rate`` (daemon CPU seconds ``cpu``); choose the next rate.

        A trial is lossless when every subscriber got every event in order
        and kept pace: its last event came at most ``MAX_LAG_S`` (or
        ``MAX_LAG_SHARE`` of the trial) after the publishers stopped. The
        bus's listeners fetch what was dropped for them, so without the lag
        a subscriber at half the rate would still count as lossless.
        """
        asked = self.next_rate
        behind = result.lag > max(MAX_LAG_S, MAX_LAG_SHARE * result.seconds)
        lossless = result.lossless and not behind
        if lossless:
            outcome = "lossless"
        elif result.lossless:
            outcome = f"all delivered but {result.lag:.2f} s behind"
        else:
            outcome = f"missing {result.missing:,}, disorder {result.disorder}"
        self.trials.append(f"{'flat out' if asked is None else f'{asked:,.0f}/s'} -> {result.rate:,.0f}/s {outcome}")
        if lossless and (self.best is None or result.rate > self.best.rate):
            self.best, self.best_cpu = result, cpu
        if lossless:
            self.lossless_rate = max(self.lossless_rate, result.rate)
            if asked is None or result.rate < 0.95 * asked:
                self.publisher_bound += 1  # nothing lost, at all the speed the publishers had
        else:
            self.lossy_rate = min(self.lossy_rate, asked or result.rate)
        close = (self.lossless_rate and self.lossy_rate < float("inf")
                 and (self.lossy_rate - self.lossless_rate) / self.lossy_rate < RESOLUTION)
        self.done = len(self.trials) > self.steps or bool(close) or self.publisher_bound >= 2
        if asked is None and not lossless:
            self.next_rate = 0.9 * min(result.delivered_rate or result.rate, result.rate)
        elif self.lossy_rate == float("inf"):
            self.next_rate = 1.25 * self.lossless_rate
        elif self.lossless_rate:
            self.next_rate = (self.lossless_rate + self.lossy_rate) / 2
        else:
            self.next_rate = 0.6 * self.lossy_rate


def zero_loss_rates(crews: dict[str, Crew], meters: dict[str, ProcessMeter], size: int, seconds: float,
                    steps: int, order: Sequence[str]) -> dict[str, Search]:
    """Search both systems' zero-loss rates, trial for trial in turn, so load from elsewhere hits both alike."""
    searches = {kind: Search(steps) for kind in crews}
    while not all(search.done for search in searches.values()):
        for kind in order:
            search = searches[kind]
            if not search.done:
                cpu_before = meters[kind].cpu()
                result = crews[kind].trial(size, search.next_rate, seconds)
                search.record(result, meters[kind].cpu() - cpu_before)
    return searches


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int
    missing: int
    cpu_per_event_us: float


def latencies_at(crews: dict[str, Crew], meters: dict[str, ProcessMeter], rate: int,
                 seconds: float) -> dict[str, Latency]:
    """Send-to-receive times of 100 B events at a fixed ``rate``, 1->1, and the daemon's CPU meanwhile.

    The systems take turns in ``LATENCY_SEGMENTS`` short runs, so a burst
    of load from elsewhere on the host falls on both alike.
    """
    samples: dict[str, list[int]] = {kind: [] for kind in crews}
    cpu = dict.fromkeys(crews, 0.0)
    sent = dict.fromkeys(crews, 0)
    missing = dict.fromkeys(crews, 0)
    for segment in range(LATENCY_SEGMENTS):
        for kind in crews if segment % 2 else reversed(list(crews)):
            cpu_before = meters[kind].cpu()
            result = crews[kind].trial(100, rate, seconds / LATENCY_SEGMENTS, timed=True)
            cpu[kind] += meters[kind].cpu() - cpu_before
            sent[kind] += result.sent
            missing[kind] += result.missing
            samples[kind].extend(result.seen[0]["latencies_ns"])
    return {kind: Latency(percentile(samples[kind], 50) / 1e6, percentile(samples[kind], 99) / 1e6,
                          len(samples[kind]), missing[kind], cpu[kind] / sent[kind] * 1e6)
            for kind in crews}


@dataclass
class Stall:
    """RSS samples (events sent, MB) of a daemon with a stalled subscriber, and the publish rate."""

    rss_mb: list[tuple[int, float]]
    rate: float

    @property
    def growth_mb(self) -> float:
        """Drift once every queue is full: median RSS of the later half of samples minus the earlier half."""
        settled = [mb for sent, mb in self.rss_mb if sent >= STALL_SETTLED]
        if len(settled) < 2:
            return float("nan")
        half = len(settled) // 2
        return median(settled[-half:]) - median(settled[:half])


def stalled_subscriber(events: int) -> Stall:
    """Flat-out events through a fresh master with one subscriber that never reads; sample its RSS."""
    with running_bus() as (daemon, target):
        meter = daemon.meter()
        with Crew(target, publishers=1, subscribers=0, stalled=1) as crew:
            samples = [(0, meter.rss() / MB)]
            sent, started = 0, time.perf_counter()
            while sent < events:
                sent += crew.trial(100, None, 120, count=min(STALL_CHUNK, events - sent)).sent
                samples.append((sent, meter.rss() / MB))
            return Stall(samples, sent / (time.perf_counter() - started))


def steady_rss(kind: str, rates: dict[int, float], seconds: float) -> float:
    """Peak RSS (MB) of a fresh daemon while 2 publishers feed 4 subscribers at 80% of the zero-loss rates."""
    running = running_bus if kind == "bus" else running_reference
    with running() as (daemon, target):
        meter = daemon.meter()
        with Crew(target, publishers=2, subscribers=4) as crew:
            crew.warm()
            for size, rate in rates.items():
                if rate:
                    crew.trial(size, 0.8 * rate, seconds)
                    meter.rss()
        return meter.peak_rss() / MB


def measure(seconds: float, steps: int, stall_events: int, starts: int) -> tuple[list[Row], list[str]]:
    """Run every scenario on both systems; the table rows and a log of the searches."""
    throughput: dict[tuple, Search] = {}
    latencies: dict[tuple, Latency] = {}
    peak_mb: dict[str, float] = {}
    order = 0
    with running_bus() as (bus_daemon, bus_target), running_reference() as (ref_daemon, ref_target):
        meters = {"bus": bus_daemon.meter(), "reference": ref_daemon.meter()}
        targets: dict[str, Target] = {"bus": bus_target, "reference": ref_target}
        for publishers, subscribers in TOPOLOGIES:
            crews = {kind: Crew(targets[kind], publishers, subscribers) for kind in KINDS}
            try:
                for crew in crews.values():
                    crew.warm()
                for size in SIZES:
                    order += 1
                    progress(f"throughput {publishers}->{subscribers} {size} B")
                    found = zero_loss_rates(crews, meters, size, seconds, steps,
                                            KINDS if order % 2 else KINDS[::-1])
                    for kind, search in found.items():
                        throughput[(publishers, subscribers, size, kind)] = search
                        progress(f"  {kind}: {search.rate:,.0f}/s  ({'; '.join(search.trials)})")
                if (publishers, subscribers) == (1, 1):
                    for rate, duration in LATENCY_RATES:
                        for kind, found_latency in latencies_at(crews, meters, rate, duration).items():
                            latencies[(rate, kind)] = found_latency
                            progress(f"latency at {rate}/s {kind}: p50 {found_latency.p50_ms:.3f} ms "
                                     f"p99 {found_latency.p99_ms:.3f} ms ({found_latency.samples} events), "
                                     f"daemon CPU {found_latency.cpu_per_event_us:.1f} µs/event")
            finally:
                for crew in crews.values():
                    crew.close()
        for kind in KINDS:
            peak_mb[kind] = meters[kind].peak_rss() / MB
    steady_mb = {}
    for kind in KINDS:
        steady_mb[kind] = steady_rss(kind, {size: throughput[(2, 4, size, kind)].rate for size in SIZES}, seconds)
        progress(f"RSS with 4 subscribers {kind}: {steady_mb[kind]:.1f} MB (overload peak {peak_mb[kind]:.1f} MB)")
    progress(f"stalled subscriber: {stall_events:,} events")
    stall = stalled_subscriber(stall_events)
    progress(f"  RSS {[f'{mb:.1f}' for _, mb in stall.rss_mb]} MB at {stall.rate:,.0f}/s")
    start_times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(starts):
        for kind in KINDS:
            start_times[kind].append(first_round_trip(kind))
    start_s = {kind: median(times) for kind, times in start_times.items()}
    progress(f"first round trip: {start_times}")
    rows = _rows(throughput, latencies, steady_mb, peak_mb, stall, start_s, starts)
    log = [f"{p}->{s} {size} B {kind}: {'; '.join(found.trials)}"
           for (p, s, size, kind), found in throughput.items()]
    return rows, log


def _rows(throughput: dict, latencies: dict, steady_mb: dict, peak_mb: dict, stall: Stall, start_s: dict,
          starts: int) -> list[Row]:
    rows = []
    for publishers, subscribers in TOPOLOGIES:
        for size in SIZES:
            ours = throughput[(publishers, subscribers, size, "bus")].rate
            theirs = throughput[(publishers, subscribers, size, "reference")].rate
            rows.append(Row(f"zero-loss throughput {publishers}→{subscribers}, {size} B", "events/s", ours, theirs,
                            f"≥ {TARGET_THROUGHPUT[(publishers, subscribers)]:.0%} of reference",
                            bool(theirs) and ours >= TARGET_THROUGHPUT[(publishers, subscribers)] * theirs))
    for rate, _ in LATENCY_RATES:
        ours, theirs = latencies[(rate, "bus")], latencies[(rate, "reference")]
        rows.append(Row(f"latency p50 at {rate:,}/s", "ms", ours.p50_ms, theirs.p50_ms, ratio_as="times"))
        rows.append(Row(f"latency p99 at {rate:,}/s", "ms", ours.p99_ms, theirs.p99_ms,
                        f"≤ {TARGET_P99:g}× reference",
                        ours.p99_ms <= TARGET_P99 * theirs.p99_ms and not ours.missing, ratio_as="times"))
    for publishers, subscribers in TOPOLOGIES:
        ours_cpu = throughput[(publishers, subscribers, 100, "bus")].cpu_per_event_us
        theirs_cpu = throughput[(publishers, subscribers, 100, "reference")].cpu_per_event_us
        rows.append(Row(f"daemon CPU per event, {publishers}→{subscribers} 100 B at the zero-loss rate", "µs",
                        ours_cpu, theirs_cpu, f"≤ {TARGET_CPU_US:g} µs", ours_cpu <= TARGET_CPU_US, ratio_as="times"))
    for rate, _ in LATENCY_RATES:
        ours, theirs = latencies[(rate, "bus")], latencies[(rate, "reference")]
        rows.append(Row(f"daemon CPU per event at a fixed {rate:,}/s, 1→1 100 B", "µs", ours.cpu_per_event_us,
                        theirs.cpu_per_event_us, f"≤ {TARGET_QUIET_CPU:g}× reference",
                        ours.cpu_per_event_us <= TARGET_QUIET_CPU * theirs.cpu_per_event_us, ratio_as="times"))
    rows.append(Row("peak RSS of the daemon, 2→4 at 80% of the zero-loss rates", "MB", steady_mb["bus"],
                    steady_mb["reference"], f"≤ {TARGET_RSS_MB:g} MB", steady_mb["bus"] <= TARGET_RSS_MB,
                    ratio_as="times"))
    rows.append(Row("peak RSS of the daemon over all runs above, overload probes included", "MB", peak_mb["bus"],
                    peak_mb["reference"], ratio_as="times"))
    sent = stall.rss_mb[-1][0]
    rows.append(Row(f"RSS drift with a stalled subscriber, {STALL_SETTLED:,} → {sent:,} events", "MB",
                    stall.growth_mb, None, f"flat (≤ {STALL_FLAT_MB:g} MB)", stall.growth_mb <= STALL_FLAT_MB))
    rows.append(Row(f"RSS with a stalled subscriber after {sent:,} events", "MB", stall.rss_mb[-1][1], None,
                    f"≤ {TARGET_RSS_MB:g} MB", stall.rss_mb[-1][1] <= TARGET_RSS_MB))
    rows.append(Row(f"start to first round trip (median of {starts})", "s", start_s["bus"], start_s["reference"],
                    f"≤ {TARGET_START_S:g} s", start_s["bus"] <= TARGET_START_S, ratio_as="times"))
    return rows


def main(argv: Sequence[str] | None = None) -> str:
    """Run the local-bus benchmark; print and return its Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.bus", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one throughput trial (1.5)")
    parser.add_argument("--steps", type=int, default=5, help="paced trials after the flat-out probe (5)")
    parser.add_argument("--stall-events", type=int, default=STALL_EVENTS, help="events past a stalled subscriber")
    parser.add_argument("--starts", type=int, default=STARTS, help="cold starts timed (5)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = load_note()
    rows, log = measure(args.seconds, args.steps, args.stall_events, args.starts)
    lines = ["## Local bus: eventbus vs a bare pyzmq PULL→PUB proxy (same run)", "",
             report.table(rows), "",
             f"Host: {load_before} at the start, {load_note()} at the end; "
             f"took {time.perf_counter() - started:.0f} s. Trials of {args.seconds:g} s.", "",
             "<details><summary>rate searches</summary>", "", *[f"- {line}" for line in log], "", "</details>", ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
