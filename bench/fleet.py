"""Benchmark: many simulated CURVE minions on one real master: ``python -m bench.fleet``.

``--minions`` (10,000) links, held by ``--workers`` (4) processes of
``bench.fleetclient`` speaking the real link protocol, plus a reference
group of 1% (at least 10) measured first in the same run. Figures, each
against its reference:

- key acceptance: the wall time of the real ``eventbus key --accept-all``
  with every fleet key pending; reference: the reference group's, scaled
  by the key count;
- master RSS per link: (RSS with every link present - RSS before any link)
  / links; reference: the same with the reference group alone;
- presence: after SIGTERM and a restart of the master, the time until
  every link is in its present set (the ``link`` control answer);
  reference: the same restart with the reference group alone;
- relay: every link relays 1 event/s for ``--seconds``; a real subscriber
  on the master bus counts each event once (``bench.fleetbus count``);
  reference: the events the links made;
- local round trip (``MasterEvent.fire_event`` until the same handle
  receives it): p50/p99 with the fleet idle (the reference) and during the
  reconnect storm after the restart.

Results: a table on stdout, the figures in ``bench/results/fleet-<date>.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import zmq.auth

from bench.fleetprocs import Workers, bus_client
from bench.fleetreport import report
from bench.measure import load_note, percentile, wait_until
from bench.procs import EVENTBUS, Node, link_state, raise_fd_limit, short_tmpdir
from eventbus.errors import BusUnavailableError

RESULTS = Path(__file__).resolve().parent / "results"
BURST = 600  # pings each reference link sends (and pongs it gets) before its memory is measured again


def progress(text: str) -> None:
    print(f"fleet: {text}", file=sys.stderr, flush=True)


class Run:
    """One benchmark run: the master, the link workers, the figures as they come."""

    def __init__(self, minions: int, workers: int, heartbeat: float, seconds: float) -> None:
        self.minions = minions
        self.reference = max(10, minions // 100)
        self.heartbeat = heartbeat
        self.seconds = seconds
        self.workers_count = workers
        self.root = short_tmpdir("ebfl")
        self.master = Node(self.root, "master", heartbeat_interval=heartbeat, log_level="warning",
                           presence_events=True, loop_interval=max(2 * heartbeat, 10))
        self.figures: dict[str, Any] = {"minions": minions, "reference_links": self.reference,
                                        "workers": workers, "heartbeat": heartbeat, "relay_seconds": seconds}
        self.ref: Workers | None = None
        self.fleet: Workers | None = None

    # -- helpers ----------------------------------------------------------------------

    def link_state(self) -> dict | None:
        """The master's ``link`` answer; ``None`` (counted) when it did not answer within 2 s."""
        try:
            return link_state(self.master)
        except BusUnavailableError:
            self.figures["control_timeouts"] = self.figures.get("control_timeouts", 0) + 1
            progress("the master did not answer its link request within 2 s")
            return None

    def present(self) -> int:
        state = self.link_state()
        return -1 if state is None else len(state["present"])

    def wait_present(self, count: int, timeout: float, what: str) -> float:
        """Seconds until ``count`` links are present, with a progress line every 2 s."""
        start = time.monotonic()
        shown = start
        while True:
            now = time.monotonic()
            present = self.present()
            if present >= count:
                return now - start
            if now - start > timeout:
                raise TimeoutError(f"{what}: {present} of {count} present after {timeout:g} s")
            if now - shown >= 2:
                shown = now
                progress(f"{what}: {present:,} of {count:,} present after {now - start:.0f} s")
            time.sleep(0.2)

    def wait_pending(self, count: int, timeout: float) -> None:
        start = time.monotonic()
        shown = start
        while True:
            state = self.link_state()
            pending = -1 if state is None else state["sessions"] - state["accepted"]
            if pending >= count:
                return
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{pending} of {count} keys pending after {timeout:g} s")
            if time.monotonic() - shown >= 2:
                shown = time.monotonic()
                progress(f"hello storm: {pending:,} of {count:,} keys pending")
            time.sleep(0.2)

    def accept_all(self, count: int) -> float:
        """Wall time of ``eventbus key --accept-all``; checks it accepted ``count`` keys."""
        start = time.perf_counter()
        done = subprocess.run([EVENTBUS, "key", "-c", str(self.master.config_dir), "--accept-all"],
                              capture_output=True, text=True, timeout=600)
        took = time.perf_counter() - start
        accepted = done.stdout.count("accepted.")
        if done.returncode != 0 or accepted != count:
            raise RuntimeError(f"key --accept-all accepted {accepted} of {count} (exit {done.returncode}): "
                               f"{done.stderr.strip()[-400:]}")
        return took

    def restart(self, count: int, timeout: float, what: str, probe: bool = False) -> tuple[float, float, list]:
        """SIGTERM the master, start it again: (s from SIGTERM to ready, s from ready until ``count`` are
        present, the round trips timed from ready until then when ``probe``)."""
        start = time.monotonic()
        self.master.stop()
        self.master.start(timeout=60)
        ready = time.monotonic()
        prober = bus_client("probe", self.master.sock_dir, self.root / "probe.stderr") if probe else None
        try:
            present = self.wait_present(count, timeout, what)
        finally:
            samples = prober.ask("stop")["samples"] if prober is not None else []
            if prober is not None:
                prober.stop()
        return ready - start, present, samples

    def rss(self) -> int:
        assert self.master.daemon is not None
        return self.master.daemon.meter().rss()

    # -- the phases -------------------------------------------------------------------

    def run(self) -> dict:
        figures = self.figures
        self.master.start(timeout=30)
        time.sleep(1.0)
        base_rss = self.rss()
        figures["master_rss_before"] = base_rss
        figures["master_nofile"] = _nofile(self.master.daemon.pid)  # type: ignore[union-attr]
        server_key = zmq.auth.load_certificate(self.master.settings.pki_dir / "master.key")[0].decode()
        port = self.master.settings.ret_port
        log = self.root / "workers.stderr"

        # The reference group: keys, memory and a restart at 1% of the fleet.
        progress(f"reference group: {self.reference} links")
        self.ref = Workers(port, server_key, [[f"ref-{n:05d}" for n in range(self.reference)]], self.heartbeat, log)
        self.ref.ask("connect")
        self.wait_pending(self.reference, 60)
        figures["accept_ref_s"] = self.accept_all(self.reference)
        self.wait_present(self.reference, 60, "reference accepted")
        time.sleep(1.0)
        figures["rss_per_link_ref"] = (self.rss() - base_rss) / self.reference
        # Traffic through every connection: libzmq keeps a link's messages in chunks of 256, each resident
        # once messages have passed through it, so a link's memory grows until some 512 have gone each way.
        pongs = self.ref.ask("stats")["pongs"]
        self.ref.ask(f"burst {BURST}")
        wait_until(lambda: self.ref.ask("stats")["pongs"] >= pongs + BURST * self.reference, 120,  # type: ignore
                   f"{BURST} pings each from the reference group")
        time.sleep(1.0)
        figures["rss_per_link_ref_traffic"] = (self.rss() - base_rss) / self.reference
        figures["burst"] = BURST
        figures["restart_ref_s"], figures["present_ref_s"], _ = self.restart(self.reference, 120, "reference restart")
        progress(f"reference: accept-all {figures['accept_ref_s']:.2f} s, {figures['rss_per_link_ref'] / 1024:.1f} kB "
                 f"a link ({figures['rss_per_link_ref_traffic'] / 1024:.1f} kB after {BURST} messages each way), "
                 f"all present {figures['present_ref_s']:.1f} s after a restart")
        base_rss = self.rss()  # the restarted master, with the reference group present
        figures["master_rss_before_fleet"] = base_rss

        # The fleet: every key pending, then accepted by the CLI.
        per_worker = -(-self.minions // self.workers_count)
        groups = [[f"fleet{w}-{n:05d}" for n in range(w * per_worker, min(self.minions, (w + 1) * per_worker))]
                  for w in range(self.workers_count)]
        self.fleet = Workers(port, server_key, groups, self.heartbeat, log)
        progress(f"{self.minions:,} links connecting from {self.workers_count} processes; their keys pending")
        started = time.monotonic()
        self.fleet.ask("connect")
        self.wait_pending(self.minions, 300)
        figures["pending_s"] = time.monotonic() - started
        progress(f"{self.minions:,} keys pending after {figures['pending_s']:.1f} s; eventbus key --accept-all")
        figures["accept_s"] = self.accept_all(self.minions)
        progress(f"accept-all took {figures['accept_s']:.2f} s")
        total = self.minions + self.reference
        figures["accepted_present_s"] = self.wait_present(total, 300, "accepted")
        time.sleep(2.0)
        figures["master_rss_links"] = self.rss()
        figures["rss_per_link"] = (figures["master_rss_links"] - base_rss) / self.minions
        progress(f"master RSS {figures['master_rss_links'] / 2**20:.0f} MB: "
                 f"{figures['rss_per_link'] / 1024:.1f} kB a link")

        # The round trip with the fleet idle (heartbeats only): the reference.
        figures["idle_rtt"] = self.probe_for(10.0)
        # Relay: every link 1 event/s.
        self.relay(total)
        # The restart and the reconnect storm, the round trip timed throughout.
        progress("SIGTERM to the master and a restart: the reconnect storm")
        figures["restart_s"], figures["present_s"], figures["storm_rtt"] = self.restart(total, 600, "storm", True)
        figures["master_rss_after_storm"] = self.rss()
        figures["worker_counts"] = self.fleet.ask("stats")
        progress(f"all {total:,} present {figures['present_s']:.1f} s after the restart")
        return figures

    def probe_for(self, seconds: float) -> list:
        progress(f"round trip on the master bus, fleet idle, {seconds:g} s")
        probe = bus_client("probe", self.master.sock_dir, self.root / "probe.stderr")
        try:
            time.sleep(seconds)
            return probe.ask("stop")["samples"]
        finally:
            probe.stop()

    def relay(self, total: int) -> None:
        assert self.fleet is not None and self.ref is not None
        figures = self.figures
        counter = bus_client("count", self.master.sock_dir, self.root / "count.stderr")
        try:
            relayed = link_state(self.master)["relayed"]
            progress(f"relay: {total:,} links x 1 event/s for {self.seconds:g} s")
            for workers in (self.ref, self.fleet):
                for child in workers.children:
                    child.write(f"relay {self.seconds} 1")
            for workers in (self.ref, self.fleet):
                for child in workers.children:
                    child.read()
            start = time.monotonic()
            while True:
                time.sleep(2.0)
                stats = [self.ref.ask("stats"), self.fleet.ask("stats")]
                made, acked = sum(s["generated"] for s in stats), sum(s["acked"] for s in stats)
                seen = counter.ask("stats")
                elapsed = time.monotonic() - start
                progress(f"relay {elapsed:.0f} s: {made:,} made, {acked:,} acked, {seen['new']:,} on the master bus")
                relaying = any(s["relaying"] for s in stats)
                if not relaying and acked >= made and seen["new"] >= made:
                    break
                if elapsed > self.seconds + 300:
                    progress("relay: gave up waiting for the rest")
                    break
            figures["relay_made"] = made
            figures["relay_acked"] = acked
            figures["relay_drained_s"] = elapsed
            figures["relay_master_counted"] = link_state(self.master)["relayed"] - relayed
        finally:
            figures["relay_bus"] = counter.ask("stop")
            counter.stop()

    def stop(self, keep: bool) -> None:
        for workers in (self.fleet, self.ref):
            if workers is not None:
                workers.stop()
        self.master.cleanup(keep)


def _nofile(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return " ".join(line.split()[3:5])
    return "?"


def rtt(samples: list, start: float | None = None, end: float | None = None) -> dict:
    """p50/p99/max (ms) and timeouts of probe ``samples`` sent within [start, end] (wall time)."""
    chosen = [lat for at, lat in samples if (start is None or at >= start) and (end is None or at <= end)]
    done = [lat * 1000 for lat in chosen if lat >= 0]
    return {"count": len(chosen), "timeouts": len(chosen) - len(done), "p50": percentile(done, 50),
            "p99": percentile(done, 99), "max": max(done, default=float("nan"))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--minions", type=int, default=10_000, help="simulated minions (default 10,000)")
    parser.add_argument("--workers", type=int, default=4, help="processes holding the links (default 4)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat_interval, s (default 5)")
    parser.add_argument("--seconds", type=float, default=30.0, help="relay phase length, s (default 30)")
    parser.add_argument("--keep", action="store_true", help="keep the master's directory (its logs)")
    args = parser.parse_args(argv)
    if args.minions < 10 or args.workers < 1 or args.seconds < 1:
        parser.error("--minions at least 10, --workers at least 1, --seconds at least 1")
    raise_fd_limit()
    load_before = load_note()
    run = Run(args.minions, args.workers, args.heartbeat, args.seconds)
    keep = args.keep
    try:
        figures = run.run()
    except BaseException:
        keep = True
        progress(f"failed: the master's directory is kept: {run.root}")
        raise
    finally:
        run.stop(keep)
    figures["load_before"], figures["load_after"] = load_before, load_note()
    figures["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    figures["command"] = "python -m bench.fleet " + " ".join(argv if argv is not None else sys.argv[1:])
    text, passed = report(figures, rtt)
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fleet-{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    out.write_text(json.dumps(figures, indent=1, default=str))
    progress(f"figures written to {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
