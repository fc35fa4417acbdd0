"""REST API under attack: slowloris and login floods against the API as it is and as it was.

``python -m bench.attack`` starts a real master and, one after the other,
the API of this checkout ("after") and the API of commit ``BEFORE`` (taken
with ``git archive`` into a temp dir and started the same way, "before";
``bench/codetree.py`` runs either tree's command),
each fresh for each attack, all on 127.0.0.x, and prints one table with
both and their ratio:

1. Slowloris with traffic: ``--streams`` (1,000) live ``/events`` streams
   (one reader process) at ``--rate`` (200) events/s for ``--seconds`` (15),
   while ``--half-open`` (1,000) connections from ``--attackers`` (10)
   addresses hold half a request head (each one the server closes is
   reopened at once, as slowloris does); ``/login`` is timed every 0.25 s
   from another address (10 s counts as a timeout); every stream must get
   every event; API RSS peak.
2. Login flood: ``--logins`` (1,000) wrong-password logins sent at once on
   as many connections from one address; meanwhile a correct login from
   another address is timed; API RSS peak.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from bench.api import PASSWORD, _pct, fire, stream_readers
from bench.attackers import LOGIN_TIMEOUT, flood_logins, hold_half_open, login
from bench.codetree import REPO, eventbus_command, tree_env
from bench.measure import wait_for
from bench.procs import free_port, raise_fd_limit

BEFORE = "23a3b3a"
QUIET_LOGINS = 20
MIN_LOGINS = 3  # timed even if the events are all fired before (an API that times out takes 10 s each)
TIMER_ADDRESS = "127.0.0.2"
GOOD_ADDRESS = "127.0.0.4"


class Site:
    """A master (this checkout) and a config dir; APIs of either code tree started on it one at a time."""

    def __init__(self, streams: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="eba-", dir="/tmp"))
        self.conf = self.root / "conf"
        self.conf.mkdir()
        self.port = free_port()
        (self.conf / "master").write_text(yaml.safe_dump({"root_dir": str(self.root), "sock_dir": "m",
                                                          "log_level": "warning"}))
        # Only keys both versions know: login_rate keeps its default (10).
        (self.conf / "api").write_text(yaml.safe_dump({
            "root_dir": str(self.root), "port": self.port, "log_level": "warning", "master_config": "master",
            "stream_limit": streams + 100,
            "external_auth": {"file": {"users_file": "users", "bench": ["*"]}}}))
        subprocess.run(eventbus_command(REPO, "user", "add", "bench", "--password-stdin", "-c", str(self.conf)),
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True, cwd=REPO)
        self.before_tree = self.root / "before"
        self.before_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE], check=True, capture_output=True)
        archive_path = self.root / "before.tar"
        archive_path.write_bytes(archive.stdout)
        with tarfile.open(archive_path) as tar:
            tar.extractall(self.before_tree, filter="data")
        self.master: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None

    def start_master(self) -> None:
        from eventbus import config
        from eventbus.bus import control
        from eventbus.errors import BusUnavailableError

        self.master_config = config.load(config.MasterConfig, self.conf / "master")
        self.master = subprocess.Popen(eventbus_command(REPO, "master", "-c", str(self.conf)), cwd=REPO)

        def up() -> bool:
            try:
                control.ping(self.master_config.sock_dir, 0.5)
                return True
            except BusUnavailableError:
                return False
        wait_for(up, 30, interval=0.05, what="the master")

    def start_api(self, which: str) -> psutil.Process:
        tree = REPO if which == "after" else self.before_tree
        self.api = subprocess.Popen(eventbus_command(tree, "api", "-c", str(self.conf)), cwd=str(tree),
                                    env=tree_env(tree))
        wait_for(lambda: login(self.port, timeout=2)[0] == 200, 60, interval=0.05, what=f"the {which} API")
        return psutil.Process(self.api.pid)

    def stop_api(self) -> None:
        if self.api is not None:
            self.api.terminate()
            try:
                self.api.wait(20)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait()
            self.api = None

    def stop(self) -> None:
        self.stop_api()
        if self.master is not None:
            self.master.terminate()
            try:
                self.master.wait(15)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class PeakRss:
    """The highest RSS of a process, sampled every 50 ms in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


# -- the attacks -----------------------------------------------------------------------------------

def slowloris(site: Site, which: str, streams: int, half_open: int, attackers: int, rate: float,
              seconds: float) -> dict:
    spawn = multiprocessing.get_context("spawn")
    api = site.start_api(which)
    try:
        _, _, token = login(site.port)
        quiet = []  # the same API before the attack: what scrypt and the machine's load cost alone
        for _ in range(QUIET_LOGINS):
            status, took, _ = login(site.port, TIMER_ADDRESS)
            quiet.append(took if status == 200 else LOGIN_TIMEOUT)
            time.sleep(0.1)
        expected = int(rate * seconds)
        ready, results = spawn.Event(), spawn.Queue()
        reader = spawn.Process(target=stream_readers, args=(site.port, token, streams, "bench/attack", expected, 20,
                                                            ready, results, seconds + 180))
        reader.start()
        if not ready.wait(120):
            raise SystemExit(f"bench: the {which} API's streams did not all open within 120 s")
        peak = PeakRss(api)
        held, stop, held_results = spawn.Event(), spawn.Event(), spawn.Queue()
        holder = spawn.Process(target=hold_half_open, args=(site.port, half_open, attackers, held, stop,
                                                            held_results, seconds + 180))
        holder.start()
        held.wait(120)
        logins: list[float] = []
        statuses: list[int] = []
        done = threading.Event()

        def time_logins() -> None:
            while not done.is_set() or len(logins) < MIN_LOGINS:
                status, took, _ = login(site.port, TIMER_ADDRESS)
                statuses.append(status)
                logins.append(took if status == 200 else LOGIN_TIMEOUT)
                done.wait(0.25)

        timer = threading.Thread(target=time_logins)
        timer.start()
        fire(str(site.master_config.sock_dir), "bench/attack", expected, rate)
        got = results.get(timeout=seconds + 200)
        done.set()
        timer.join(MIN_LOGINS * (LOGIN_TIMEOUT + 1) + 5)
        stop.set()
        hold = held_results.get(timeout=60)
        reader.join(30)
        holder.join(30)
        counts = got["counts"]
        return {"complete": sum(1 for c in counts if c == expected), "streams": streams, "events": expected,
                "min_count": min(counts), "login_p50": _pct(logins, 0.5), "login_p99": _pct(logins, 0.99),
                "quiet_p50": _pct(quiet, 0.5), "quiet_p99": _pct(quiet, 0.99),
                "logins": len(logins), "login_failures": sum(1 for s in statuses if s != 200),
                "rss_peak": peak.stop(), "threads": api.num_threads(), **{f"held_{k}": v for k, v in hold.items()}}
    finally:
        site.stop_api()


def login_flood(site: Site, which: str, count: int) -> dict:
    spawn = multiprocessing.get_context("spawn")
    api = site.start_api(which)
    try:
        rss_before = api.memory_info().rss
        peak = PeakRss(api)
        ready, results = spawn.Event(), spawn.Queue()
        flooder = spawn.Process(target=flood_logins, args=(site.port, count, ready, results, 180))
        flooder.start()
        ready.wait(120)
        status, took, _ = login(site.port, GOOD_ADDRESS, timeout=30)
        flood = results.get(timeout=200)
        flooder.join(30)
        return {"good_status": status, "good_seconds": took if status == 200 else float("inf"),
                "rss_before": rss_before, "rss_peak": peak.stop(), **flood}
    finally:
        site.stop_api()


def _ratio(after: float, before: float) -> str:
    if not before or after != after or before != before:
        return ""
    return f"×{after / before:.2f}"


def report(figures: dict, args: argparse.Namespace) -> str:
    ms, mib = 1000.0, 1024 * 1024
    before, after = figures["before"], figures["after"]
    sb, sa, lb, la = before["slowloris"], after["slowloris"], before["flood"], after["flood"]

    def secs(value: float) -> str:
        return "no answer" if value == float("inf") else f"{value * ms:.0f} ms"

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows = [
        ("/login p50 / p99 at rest (same API, just before the attack)",
         f"{sb['quiet_p50'] * ms:.0f} / {sb['quiet_p99'] * ms:.0f} ms", f"{sa['quiet_p50'] * ms:.0f} / "
         f"{sa['quiet_p99'] * ms:.0f} ms", "", "", ""),
        ("/login p50 under slowloris + streams", f"{sb['login_p50'] * ms:.0f} ms", f"{sa['login_p50'] * ms:.0f} ms",
         _ratio(sa["login_p50"], sb["login_p50"]), "", ""),
        ("/login p99 under slowloris + streams", f"{sb['login_p99'] * ms:.0f} ms", f"{sa['login_p99'] * ms:.0f} ms",
         _ratio(sa["login_p99"], sb["login_p99"]), "< 150 ms", verdict(sa["login_p99"] < 0.150)),
        ("/login timeouts or errors (of tries)", f"{sb['login_failures']} of {sb['logins']}",
         f"{sa['login_failures']} of {sa['logins']}", "", "0", verdict(sa["login_failures"] == 0)),
        ("streams with every event", f"{sb['complete']} / {sb['streams']} (min {sb['min_count']})",
         f"{sa['complete']} / {sa['streams']} (min {sa['min_count']})", "", "all",
         verdict(sa["complete"] == sa["streams"])),
        ("API RSS peak, slowloris + streams", f"{sb['rss_peak'] / mib:.0f} MiB", f"{sa['rss_peak'] / mib:.0f} MiB",
         _ratio(sa["rss_peak"], sb["rss_peak"]), "≤ 300 MiB", verdict(sa["rss_peak"] <= 300 * mib)),
        ("API threads, slowloris + streams", str(sb["threads"]), str(sa["threads"]), "", "", ""),
        ("half-open connections: opened / ended by the API and reopened",
         f"{sb['held_opened']} / {sb['held_answered']}", f"{sa['held_opened']} / {sa['held_answered']}", "", "", ""),
        (f"API RSS peak, {args.logins} wrong logins at once", f"{lb['rss_peak'] / mib:.0f} MiB",
         f"{la['rss_peak'] / mib:.0f} MiB", _ratio(la["rss_peak"], lb["rss_peak"]), "≤ 250 MiB",
         verdict(la["rss_peak"] <= 250 * mib)),
        ("correct login from another address meanwhile", secs(lb["good_seconds"]), secs(la["good_seconds"]),
         _ratio(la["good_seconds"], lb["good_seconds"]) if lb["good_seconds"] != float("inf") else "",
         "< 1 s", verdict(la["good_seconds"] < 1.0)),
        ("the flood's answers", ", ".join(f"{k}: {v}" for k, v in sorted(lb["statuses"].items())),
         ", ".join(f"{k}: {v}" for k, v in sorted(la["statuses"].items())), "", "", ""),
        ("the flood answered in", f"{lb['seconds']:.1f} s", f"{la['seconds']:.1f} s",
         _ratio(la["seconds"], lb["seconds"]), "", ""),
    ]
    lines = [f"REST API under attack ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
             f"{args.streams} streams at {args.rate:g} ev/s for {args.seconds:g} s, {args.half_open} half-open "
             f"from {args.attackers} addresses; before = {BEFORE})", "",
             f"| measure | before ({BEFORE}) | after | after/before | target | |", "|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--half-open", type=int, default=1000)
    parser.add_argument("--attackers", type=int, default=10, help="source addresses of the half-open connections")
    parser.add_argument("--rate", type=float, default=200.0)
    # Over the gate's 10 s request timeout, so every half-open socket is also closed and reopened meanwhile.
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--logins", type=int, default=1000)
    parser.add_argument("--only", choices=("before", "after"), help="measure one API only (no ratios)")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    raise_fd_limit()
    site = Site(args.streams)
    figures: dict[str, dict] = {}
    try:
        site.start_master()
        for which in ("after", "before") if args.only is None else (args.only,):
            print(f"bench.attack: {which}: login flood", file=sys.stderr, flush=True)
            flood = login_flood(site, which, args.logins)
            print(f"bench.attack: {which}: slowloris with {args.streams} streams", file=sys.stderr, flush=True)
            loris = slowloris(site, which, args.streams, args.half_open, args.attackers, args.rate, args.seconds)
            figures[which] = {"flood": flood, "slowloris": loris}
    finally:
        site.stop()
    if args.only is None:
        print(report(figures, args))
    if args.json or args.only is not None:
        print(json.dumps(figures, indent=2, default=str))
    after = figures.get("after")
    ok = after is None or (after["slowloris"]["complete"] == after["slowloris"]["streams"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
