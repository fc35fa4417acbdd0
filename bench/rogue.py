"""Benchmark: honest minions' relay latency while a rogue accepted minion floods and misbehaves.

``python -m bench.rogue`` starts a real master and ``--minions`` (4) minion
daemons relaying ``--rate`` (200) events/s in all (``bench.roguetraffic``'s
``HonestTraffic``), each timed from the minion's ``fire_master`` to the
master's journal append, just before the master publishes it (the relay;
``bench.journaltimes``), and to a subscriber on the master bus (reported:
every subscriber also reads each event the rogue gets relayed, and this one
shares its process with the firing). The same traffic runs ``--seconds`` (30) before the
attack and as long during it, when the rogue (an accepted key) floods full
batches from one process of its own and from another, each second, sends
malformed and oversize messages, reserved and other minions' tags, replays,
claims an honest minion's id and acknowledges fire jobs not sent to it. An
operator's targeted fire reaches the honest minions each second in both
phases. Two references: the same run's "before" phase (the raw ratio),
and a "calibrated" phase after the attack in which neutral processes at
nice 19 burn as much CPU as the rogue's two processes used during it
(measured with psutil), touching nothing of the bus. On a fleet the rogue
is another host; here its processes share the 2 cores with the master and
the honest minions, so the target (a p99 during the attack within 2x,
with no honest event lost) is judged against the calibrated phase: what
the master's handling of the rogue costs the others, not the rogue's own
CPU on the same host.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from bench import journaltimes
from bench.linkclient import Rogue
from bench.measure import MB, ProcessMeter, load_note, percentile, thread_seconds
from bench.procs import Node, Site, link_state, wait_link
from bench.roguetraffic import Flood, HonestTraffic, Misbehaving
from eventbus.bus import payload, wire

MAX_EVENT_SIZE = 65536
TARGET = 2.0  # honest relay p99 during the attack / before, at most
WARMUP = 1.0  # s of traffic before the "before" phase: the minions' first connections are not measured
SPARK = "▁▂▃▄▅▆▇█"


def _progress(text: str) -> None:
    print(f"rogue: {text}", file=sys.stderr, flush=True)


class Phase:
    """One measured phase: its span, and the master's CPU and sampled RSS over it."""

    def __init__(self, name: str, meter: ProcessMeter) -> None:
        self.name = name
        self.meter = meter
        self.start = time.monotonic()
        self.wall = time.time()
        self.cpu_start = meter.cpu()
        self.main_start = self._main_cpu()
        self.end = self.start
        self.cpu = 0.0
        self.main_cpu = 0.0  # of ``cpu``, the master's main thread (its loop); the rest are libzmq's threads
        self.rss: list[int] = []
        self.relayed = 0
        self.refused = 0

    def _main_cpu(self) -> float:
        return thread_seconds(self.meter.pid).get(self.meter.pid, 0.0)

    def finish(self, relayed: int, refused: int) -> None:
        self.end = time.monotonic()
        self.cpu = (self.meter.cpu() - self.cpu_start) / (self.end - self.start)
        self.main_cpu = (self._main_cpu() - self.main_start) / (self.end - self.start)
        self.relayed, self.refused = relayed, refused


BURN_SLICE = 0.01  # s: a burner alternates busy and idle within this period, at the measured duty cycle
_BURNER = """
import os, sys, time
os.nice(19)
duty, period = float(sys.argv[1]), float(sys.argv[2])
while True:
    start = time.monotonic()
    while time.monotonic() - start < duty * period:
        pass
    time.sleep(max(0.0, period - (time.monotonic() - start)))
"""


class Burners:
    """Neutral processes at nice 19 burning ``cores`` of CPU in all (one per started core), touching no bus."""

    def __init__(self, cores: float) -> None:
        count = max(1, math.ceil(cores))
        duty = min(1.0, cores / count)
        self.procs = [subprocess.Popen([sys.executable, "-c", _BURNER, f"{duty}", f"{BURN_SLICE}"])
                      for _ in range(count)] if cores > 0 else []
        self.meters = [ProcessMeter(proc.pid) for proc in self.procs]

    def cpu(self) -> float:
        return sum(meter.cpu() for meter in self.meters)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def _run_phase(phase: Phase, seconds: float, master: Node, traffic: HonestTraffic) -> None:
    """Let ``seconds`` pass, sampling the master and firing on the honest minions each second."""
    from eventbus.bus.admin import Admin

    admin = Admin.for_master(master.settings)
    status = link_state(master)
    relayed, refused = status["relayed"], status["refused"]
    tick = phase.start
    while tick < phase.start + seconds:
        tick += 1.0
        time.sleep(max(0.0, tick - time.monotonic()))
        phase.rss.append(phase.meter.rss())
        admin.fire({"n": len(phase.rss)}, "bench/rogue/fire", "h*")
        _progress(f"{phase.name} {len(phase.rss)}/{math.ceil(seconds)} s: "
                  f"{traffic.count(phase.name)} honest events seen, master RSS {phase.rss[-1] / MB:.1f} MB")
    status = link_state(master)
    phase.finish(status["relayed"] - relayed, status["refused"] - refused)


def measure(minions: int, rate: float, seconds: float) -> dict:
    """Run both phases; what the traffic saw, the flood's and misbehaviour's counts, and the phases."""
    site = Site(heartbeat=1.0, log_level="warning")  # logging is not what is measured; refusals are ERRORs
    # The honest minions fsync their spools each second; on one host, behind the master's journal writes
    # for the flood, that fsync can hold a minion's relay for 100-300 ms, which minions on their own
    # machines do not see: their spools are in memory where the host has it.
    spools = Path(tempfile.mkdtemp(prefix="ebspool-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    traffic = flood = misbehaving = None
    keep = False
    try:
        master = site.master(auto_accept=True, max_event_size=MAX_EVENT_SIZE)
        meter = master.start(timeout=20).meter()
        honest = [site.minion(f"h{n + 1}", cachedir=str(spools / f"h{n + 1}")) for n in range(minions)]
        for node in honest:
            node.start(timeout=20)
        for node in honest:
            wait_link(node, "accept", timeout=30)
        rogue = Rogue(master, "rogue")
        try:
            answer = rogue.hello().value["result"]
        finally:
            rogue.close()
        if answer != "accept":
            raise RuntimeError(f"the master answered the rogue's hello with {answer!r}, not 'accept'")
        _progress(f"master and {minions} minions up; {rate:g} honest events/s for {seconds:g} s before, "
                  f"{seconds:g} s during the attack")

        traffic = HonestTraffic(master, honest, interval=minions / rate)
        traffic.phase("warmup")
        time.sleep(WARMUP)
        traffic.phase("before")
        before = Phase("before", meter)
        _run_phase(before, seconds, master, traffic)

        traffic.phase("ramp")  # until the flood runs: counted for losses, not for latency
        relayed = link_state(master)["relayed"]
        flood = Flood(master.path, rogue.key_dir, "rogue")
        misbehaving = Misbehaving(master.path, rogue.key_dir, "rogue", honest[0].settings.id)
        wait = time.monotonic()
        while link_state(master)["relayed"] < relayed + 2_000:
            if time.monotonic() - wait > 30:
                raise TimeoutError("the flood did not start within 30 s")
            time.sleep(0.05)
        rogue_meters = [ProcessMeter(flood.proc.pid), ProcessMeter(misbehaving.proc.pid)]
        traffic.phase("during")
        during = Phase("during", meter)
        rogue_cpu = sum(m.cpu() for m in rogue_meters)
        _run_phase(during, seconds, master, traffic)
        rogue_cpu = (sum(m.cpu() for m in rogue_meters) - rogue_cpu) / (during.end - during.start)

        traffic.phase("after")
        _progress(f"stopping the rogue (its processes used {rogue_cpu * 100:.0f}% of a core); "
                  "the same CPU burnt by neutral processes next")
        flooded = flood.stop()
        flood = None
        misbehaved = misbehaving.stop()
        misbehaving = None
        time.sleep(1.0)  # the master works off what the rogue left queued
        burners = Burners(rogue_cpu)
        try:
            traffic.phase("calibrated")
            calibrated = Phase("calibrated", meter)
            burnt = burners.cpu()
            _run_phase(calibrated, seconds, master, traffic)
            burnt = (burners.cpu() - burnt) / (calibrated.end - calibrated.start)
        finally:
            burners.stop()
        traffic.phase("after")
        _progress("waiting for every honest event")
        seen = traffic.stop()
        traffic = None
        alive = master.daemon is not None and master.daemon.alive()
        return {"seen": seen, "flood": flooded, "misbehaved": misbehaved, "phases": (before, during, calibrated),
                "alive": alive, "load": load_note(), "rogue_cpu": rogue_cpu, "burnt": burnt,
                "journaled": journal_latency(master)}
    except BaseException:
        keep = True  # the daemons' logs say what went wrong
        _progress(f"failed: the daemons' directories are kept: {[str(node.root) for node in site.nodes]}")
        raise
    finally:
        for part in (flood, misbehaving):
            if part is not None and part.proc.poll() is None:
                part.proc.kill()
                part.proc.wait()
        if traffic is not None:
            traffic.kill()
        site.cleanup(keep)
        shutil.rmtree(spools, ignore_errors=True)


def journal_latency(master: Node) -> dict[str, tuple[list[float], list[float]]]:
    """Per phase, the honest events' fire times (their ``w``) and their time from ``fire_master`` to the
    master's journal append, which comes just before the master publishes them: the relay alone, without a
    listener that must also read every event the rogue relays."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for _seq, written, frame in journaltimes.records(master.settings.journal_dir):
        _, _, raw_tag, raw_data = wire.split_bus_frame(frame)
        if not raw_tag.startswith(b"honest/"):
            continue
        body = payload.unpack_data(raw_data).get("data", {})
        if isinstance(body, dict) and isinstance(body.get("w"), float):
            fired, latency = out.setdefault(str(body.get("phase")), ([], []))
            fired.append(body["w"])
            latency.append(written - body["w"])
    return out


def per_second(fired_at: list[float], latency: list[float], start: float, seconds: float) -> list[float]:
    """The p99 latency (ms) of the events fired in each second from ``start``; NaN for an empty second."""
    bins: list[list[float]] = [[] for _ in range(math.ceil(seconds))]
    for at, value in zip(fired_at, latency):
        index = int(at - start)
        if 0 <= index < len(bins):
            bins[index].append(value * 1000)
    return [percentile(values, 99) for values in bins]


def sparkline(values: list[float], top: float) -> str:
    return "".join(" " if math.isnan(v) else SPARK[min(len(SPARK) - 1, int(v / top * len(SPARK)))] for v in values)


def chart(before: list[float], during: list[float]) -> str:
    """The per-second p99s of both phases on one scale, as text."""
    top = max([v for v in before + during if not math.isnan(v)], default=1.0) or 1.0
    lines = [f"relay p99 to the master bus per second, ms (one character a second; █ = {top:.1f} ms)", "",
             f"before  {sparkline(before, top)}  " + " ".join(f"{v:.1f}" for v in before),
             f"during  {sparkline(during, top)}  " + " ".join(f"{v:.1f}" for v in during)]
    return "```\n" + "\n".join(lines) + "\n```"


def _ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def report(result: dict, minions: int, rate: float, seconds: float) -> tuple[str, bool]:
    """The Markdown section and whether the target was met."""
    seen, flood, misbehaved = result["seen"], result["flood"], result["misbehaved"]
    before, during, calibrated = result["phases"]
    if seen["errors"]:
        raise RuntimeError(f"the traffic process failed: {seen['errors']}")
    sent = sum(seen["fired"].values())
    received = sum(len(set(ns)) for ns in seen["seen"].values())
    disordered = sum(ns != sorted(set(ns)) for ns in seen["seen"].values())
    lost = sent - received
    names = ("before", "during", "calibrated")
    journaled = {name: result["journaled"].get(name, ([], [])) for name in names}
    lat = {name: journaled[name][1] for name in names}  # the relay: fire_master -> the master's journal
    heard = {name: seen["latency"].get(name, []) for name in names}  # -> a listener on the master bus
    p99 = {name: _ms(values, 99) for name, values in lat.items()}
    heard99 = {name: _ms(values, 99) for name, values in heard.items()}
    ratio = p99["during"] / p99["before"]
    judged = p99["during"] / p99["calibrated"]
    passed = judged <= TARGET and lost == 0 and not disordered and result["alive"]
    rows = [
        ("honest events timed (calibrated phase: " + f"{len(lat['calibrated']):,})", f"{len(lat['before']):,}",
         f"{len(lat['during']):,}", "", "", ""),
        ("relay p50 to the master bus (ms)", f"{_ms(lat['before'], 50):.1f}", f"{_ms(lat['during'], 50):.1f}",
         f"×{_ms(lat['during'], 50) / _ms(lat['before'], 50):.2f}", "", ""),
        ("relay p99 to the master bus, raw: during / before (ms)", f"{p99['before']:.1f}", f"{p99['during']:.1f}",
         f"×{ratio:.2f}", "", ""),
        ("relay p99 to the master bus, calibrated: during / the rogue's CPU burnt by neutral processes (ms)",
         f"{p99['calibrated']:.1f}", f"{p99['during']:.1f}", f"×{judged:.2f}", f"≤ ×{TARGET:g}",
         "PASS" if judged <= TARGET else "FAIL"),
        ("CPU of the rogue's processes during / of the neutral burners (% of a core)", "",
         f"{result['rogue_cpu'] * 100:.0f} / {result['burnt'] * 100:.0f}", "", "", ""),
        ("relay max to the master bus (ms)", f"{_ms(lat['before'], 100):.1f}", f"{_ms(lat['during'], 100):.1f}",
         f"×{_ms(lat['during'], 100) / _ms(lat['before'], 100):.2f}", "", ""),
        ("p99 to a listener on the master bus, which also reads the rogue's relayed events (ms; calibrated "
         f"phase: {heard99['calibrated']:.1f})", f"{heard99['before']:.1f}", f"{heard99['during']:.1f}",
         f"×{heard99['during'] / heard99['before']:.2f}", "", ""),
        ("honest events sent / received / lost (whole run)", "", f"{sent:,} / {received:,} / {lost}", "", "0 lost",
         "PASS" if lost == 0 else "FAIL"),
        ("minions whose events came out of order or twice", "", f"{disordered}", "", "0",
         "PASS" if not disordered else "FAIL"),
        ("events the master relayed (/s)", f"{before.relayed / (before.end - before.start):,.0f}",
         f"{during.relayed / (during.end - during.start):,.0f}", "", "", ""),
        ("flood batches sent / acked / answered resend", "",
         f"{flood['messages']:,} / {flood['acked']:,} / {flood['resent']:,}", "", "", ""),
        ("flood events sent, from its start to its stop", "", f"{flood['events']:,}", "", "", ""),
        ("other rogue messages (rounds)", "", f"{misbehaved['messages']:,} ({misbehaved['rounds']})", "", "", ""),
        ("refusals the master counted", f"{before.refused:,}", f"{during.refused:,}", "", "", ""),
        ("master CPU (% of a core; calibrated phase: " + f"{calibrated.cpu * 100:.0f})",
         f"{before.cpu * 100:.0f}", f"{during.cpu * 100:.0f}",
         f"×{during.cpu / before.cpu:.1f}" if before.cpu else "", "", ""),
        ("of it, the master's main thread / libzmq's threads (% of a core)",
         f"{before.main_cpu * 100:.0f} / {(before.cpu - before.main_cpu) * 100:.0f}",
         f"{during.main_cpu * 100:.0f} / {(during.cpu - during.main_cpu) * 100:.0f}", "", "", ""),
        ("master RSS, highest of the 1 s samples (MB)", f"{max(before.rss) / MB:.1f}", f"{max(during.rss) / MB:.1f}",
         "", "", ""),
        ("master still running", "", "yes" if result["alive"] else "no", "", "yes",
         "PASS" if result["alive"] else "FAIL"),
    ]
    lines = ["### A rogue minion's flood (`python -m bench.rogue`)", "",
             f"{minions} honest minions, {rate:g} events/s in all, {seconds:g} s before and {seconds:g} s during "
             f"the attack; {result['load']}.", "",
             "| figure | before | during the attack | during / before | target | result |",
             "|---|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", chart(per_second(*journaled["before"], before.wall, seconds),
                        per_second(*journaled["during"], during.wall, seconds))]
    slowest = [f"{latency * 1000:.0f} ms ({minion_id} #{n})" for latency, _, minion_id, n in seen["slowest"][:5]]
    lines += ["", f"Slowest honest events at the listener (warm-up and ramp included): {', '.join(slowest)}."]
    return "\n".join(lines), passed


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; the exit code is 1 when the target is missed (``make bench`` reads the FAIL rows)."""
    parser = argparse.ArgumentParser(prog="python -m bench.rogue", description=__doc__.splitlines()[0])
    parser.add_argument("--minions", type=int, default=4, help="honest minion daemons (default 4)")
    parser.add_argument("--rate", type=float, default=200.0, help="honest events/s in all (default 200)")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="length of each phase (default 30: a p99 of 6,000 honest events, steadier on a "
                             "shared host than 10 s' 2,000)")
    args = parser.parse_args(argv or [])
    if args.minions < 1 or args.rate <= 0 or args.seconds < 1:
        parser.error("--minions, --rate and --seconds must be at least 1, above 0 and at least 1")
    result = measure(args.minions, args.rate, args.seconds)
    text, passed = report(result, args.minions, args.rate, args.seconds)
    print(text, flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
