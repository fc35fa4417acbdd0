"""Benchmark of the master/minion link: relay throughput and latency, 1,000 minions, the spool.

``python -m bench.relay`` prints a Markdown table. Every relay figure is
reported next to the local bus measured the same way in the same run (the
reference), so the ratio says what the link costs on this machine.

- throughput: N events of ~100 B fired as fast as one client can, counted
  by a subscriber process on the master bus (local bus: ``fire_event`` on the
  master; relay: ``fire_master`` on a minion);
- latency: 500 events/s for a few seconds, send-to-subscriber p50/p99;
- scale: 1,000 CURVE minion connections from a few processes, presence
  checked, master RSS before and after;
- spool: 100,000 events relayed while the master is down, then the time
  until all are on the master bus after it returns (checked: once, in order).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

EVENTBUS = str(Path(sys.executable).parent / "eventbus")
PAD = "x" * 60  # with the counter and the tag, about 100 B packed


# -- daemons ---------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Site:
    """A master and a minion in a temp dir on free ports."""

    def __init__(self, heartbeat: float = 2.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ebb-", dir="/tmp"))
        self.conf = self.root / "conf"
        self.conf.mkdir()
        ports = {"publish_port": _free_port(), "ret_port": _free_port()}
        common = {"root_dir": str(self.root), "log_level": "warning", "heartbeat_interval": heartbeat, **ports}
        # A subscriber starved of CPU by other jobs must not be dropped from under the count.
        self._write("master", sock_dir="m", auto_accept=True, subscriber_queue=1_000_000, **common)
        self._write("minion", sock_dir="n", id="bench-minion", **common)
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = ports

    def _write(self, name: str, **keys: Any) -> None:
        (self.conf / name).write_text(yaml.safe_dump(keys))

    def settings(self, node: str) -> Any:
        from eventbus import config

        cls = config.MasterConfig if node == "master" else config.MinionConfig
        return config.load(cls, self.conf / node)

    def start(self, node: str) -> None:
        from eventbus import control
        from eventbus.errors import BusUnavailableError

        log = open(self.root / f"{node}.log", "ab")
        self.procs[node] = subprocess.Popen([EVENTBUS, node, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                control.ping(self.settings(node).sock_dir, timeout=0.5)
                return
            except BusUnavailableError:
                if time.monotonic() > deadline or self.procs[node].poll() is not None:
                    raise RuntimeError(f"{node} did not start; see {self.root / (node + '.log')}") from None
                time.sleep(0.05)

    def stop(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)

    def link(self, node: str) -> dict:
        from eventbus import control

        return control.request(self.settings(node).sock_dir, b"link", None)

    def wait(self, predicate: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError("timed out")
            time.sleep(0.05)

    def close(self, keep: bool = False) -> None:
        for node in list(self.procs):
            self.stop(node)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


# -- the subscriber process ------------------------------------------------------------


def _subscribe(conf: str, tag: str, count: int, ready: Any, results: Any) -> None:
    """Count ``count`` events under ``tag`` on the master bus; send back (first, last, latencies, ns)."""
    from eventbus import config, event

    opts = config.load(config.MasterConfig, Path(conf) / "master")
    latencies = []
    ns = []
    with event.get_event("master", opts=opts) as bus:
        ready.set()
        first = last = 0.0
        for _ in range(count):
            item = bus.get_event(wait=20, tag=tag)
            now = time.time_ns()
            if item is None:
                break
            last = time.perf_counter()
            if not first:
                first = last
            data = item.get("data", item)
            latencies.append(now - data["t"])
            ns.append(data["n"])
        lost = bus.lost
    results.send((first, last, latencies, ns, lost))


class Subscriber:
    """A subscriber process on the master bus, live before the sender starts."""

    def __init__(self, site: Site, tag: str, count: int) -> None:
        self.ready = multiprocessing.Event()
        self.parent, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(target=_subscribe, args=(str(site.conf), tag, count, self.ready, child))
        self.proc.start()
        if not self.ready.wait(20):
            raise RuntimeError("subscriber did not start")

    def result(self, timeout: float = 120) -> tuple[float, float, list[int], list[int], int]:
        if not self.parent.poll(timeout):
            self.proc.kill()
            raise RuntimeError("subscriber did not finish")
        out = self.parent.recv()
        self.proc.join()
        return out


# -- measurements ----------------------------------------------------------------------


def _sender(site: Site, relay: bool) -> Any:
    from eventbus import event

    if relay:
        return event.MinionEvent(opts=site.settings("minion"), listen=False)
    return event.MasterEvent(opts=site.settings("master"), listen=False)


def throughput(site: Site, relay: bool, count: int) -> float:
    """Events per second from one sender to a master-bus subscriber."""
    sub = Subscriber(site, "bench/tp", count)
    handle = _sender(site, relay)
    fire = handle.fire_master if relay else handle.fire_event
    start = time.perf_counter()
    for n in range(count):
        if not fire({"n": n, "t": 0, "pad": PAD}, "bench/tp", 5000):
            raise RuntimeError("the daemon did not take an event")
    _first, last, _lat, ns, lost = sub.result()
    handle.destroy()
    if len(ns) != count:
        missing = sorted(set(range(count)) - set(ns))[:10]
        raise RuntimeError(f"only {len(ns)} of {count} events arrived (missing {missing}; the master bus "
                           f"dropped {lost} for the subscriber); logs in {site.root}")
    return count / (last - start)


def latency(site: Site, relay: bool, rate: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) in ms from send to a master-bus subscriber at ``rate`` events/s."""
    count = int(rate * seconds)
    sub = Subscriber(site, "bench/lat", count)
    handle = _sender(site, relay)
    fire = handle.fire_master if relay else handle.fire_event
    interval = 1.0 / rate
    start = time.perf_counter()
    for n in range(count):
        target = start + n * interval
        while time.perf_counter() < target:
            time.sleep(max(0.0, min(0.001, target - time.perf_counter())))
        fire({"n": n, "t": time.time_ns(), "pad": PAD}, "bench/lat", 5000)
    _first, _last, lat, _ns, _lost = sub.result()
    handle.destroy()
    lat_ms = sorted(x / 1e6 for x in lat)
    return statistics.median(lat_ms), lat_ms[int(len(lat_ms) * 0.99) - 1]


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def _many_minions(ret_port: int, server_key: bytes, first: int, count: int, heartbeat: float,
                  seconds: float, ready: Any) -> None:
    """``count`` CURVE minion connections that say hello and ping every heartbeat for ``seconds``."""
    import zmq

    from daemon import linkproto

    context = zmq.Context()
    sockets = []
    for n in range(first, first + count):
        public, secret = zmq.curve_keypair()
        sock = context.socket(zmq.DEALER)
        sock.curve_serverkey = server_key
        sock.curve_publickey = public
        sock.curve_secretkey = secret
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{ret_port}")
        sock.send_multipart(linkproto.hello(f"scale-{n:04d}"))
        sockets.append(sock)
    ready.set()
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    end = time.monotonic() + seconds
    next_ping = time.monotonic() + heartbeat
    while time.monotonic() < end:
        for sock, _ in poller.poll(100):
            while sock.poll(0):
                sock.recv_multipart()
        if time.monotonic() >= next_ping:
            next_ping += heartbeat
            for sock in sockets:
                sock.send_multipart(linkproto.PING_MESSAGE, zmq.NOBLOCK)
    context.destroy(0)


def scale(minions: int, processes: int) -> dict[str, float]:
    """Master RSS and presence with ``minions`` CURVE connections from ``processes`` processes."""
    import zmq.auth

    site = Site(heartbeat=2.0)
    try:
        site.start("master")
        pid = site.procs["master"].pid
        time.sleep(0.5)
        rss_before = _rss_mb(pid)
        server_key, _ = zmq.auth.load_certificate(site.settings("master").pki_dir / "master.key")
        per = minions // processes
        procs = []
        start = time.perf_counter()
        for index in range(processes):
            ready = multiprocessing.Event()
            proc = multiprocessing.Process(target=_many_minions, args=(
                site.ports["ret_port"], server_key, index * per, per, 2.0, 60.0, ready))
            proc.start()
            procs.append((proc, ready))
        for _, ready in procs:
            ready.wait(60)
        site.wait(lambda: len(site.link("master")["present"]) == per * processes, timeout=60)
        up = time.perf_counter() - start
        time.sleep(5)  # a few heartbeat rounds: nobody may drop out
        present = len(site.link("master")["present"])
        rss_after = _rss_mb(pid)
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.join()
        site.wait(lambda: len(site.link("master")["present"]) == 0, timeout=10)
        return {"minions": per * processes, "present": present, "up_s": up, "rss_before": rss_before,
                "rss_after": rss_after, "per_minion_kb": (rss_after - rss_before) * 1000 / (per * processes)}
    finally:
        site.close()


def spool(count: int) -> dict[str, float]:
    """Relay ``count`` events while the master is down; time their delivery once it is back."""
    site = Site()
    try:
        site.start("master")
        site.start("minion")
        site.wait(lambda: site.link("minion")["state"] == "accept")
        site.stop("master")
        site.wait(lambda: site.link("minion")["state"] == "connecting")
        handle = _sender(site, True)
        queued_at = time.perf_counter()
        for n in range(count):
            handle.fire_master({"n": n, "t": 0, "pad": PAD}, "bench/spool", 5000)
        handle.destroy()
        site.wait(lambda: site.link("minion")["spooled"] >= count, timeout=120)
        queue_s = time.perf_counter() - queued_at
        # The subscriber must be live on the new master before the minion reconnects, so the
        # minion is frozen meanwhile; the clock starts when it thaws (its reconnect backoff counts).
        minion = site.procs["minion"]
        minion.send_signal(signal.SIGSTOP)
        try:
            site.start("master")
            sub = Subscriber(site, "bench/spool", count)
        finally:
            minion.send_signal(signal.SIGCONT)
        start = time.perf_counter()
        _first, last, _lat, ns, _lost = sub.result(timeout=300)
        deliver_s = last - start
        in_order_once = ns == list(range(count))
        site.wait(lambda: site.link("minion")["spooled"] == 0, timeout=30)
        return {"events": count, "queue_s": queue_s, "deliver_s": deliver_s, "ok": in_order_once}
    finally:
        site.close()


def run(quick: bool = False) -> str:
    """Run every measurement; return the Markdown table."""
    count = 20_000 if quick else 100_000
    rows = []
    site = Site()
    keep = False
    try:
        site.start("master")
        site.start("minion")
        site.wait(lambda: site.link("minion")["state"] == "accept")
        bus_tp = throughput(site, False, count)
        relay_tp = throughput(site, True, count)
        bus_lat = latency(site, False, 500, 2 if quick else 4)
        relay_lat = latency(site, True, 500, 2 if quick else 4)
    except RuntimeError:
        keep = True  # the daemons' logs say what went wrong
        raise
    finally:
        site.close(keep)
    rows.append(("throughput, 100 B events (ev/s)", f"{bus_tp:,.0f}", f"{relay_tp:,.0f}",
                 f"{relay_tp / bus_tp:.2f}", "≥ 20,000", "yes" if relay_tp >= 20_000 else "NO"))
    rows.append(("latency p50 at 500 ev/s (ms)", f"{bus_lat[0]:.2f}", f"{relay_lat[0]:.2f}",
                 f"{relay_lat[0] / bus_lat[0]:.1f}", "", ""))
    rows.append(("latency p99 at 500 ev/s (ms)", f"{bus_lat[1]:.2f}", f"{relay_lat[1]:.2f}",
                 f"{relay_lat[1] / bus_lat[1]:.1f}", "≤ 5", "yes" if relay_lat[1] <= 5 else "NO"))
    big = scale(200 if quick else 1000, 4)
    rows.append((f"{big['minions']} CURVE minions: present after 5 s of heartbeats", "", f"{big['present']:.0f}",
                 "", f"{big['minions']}", "yes" if big["present"] == big["minions"] else "NO"))
    rows.append(("  time until all present (s)", "", f"{big['up_s']:.1f}", "", "", ""))
    rows.append(("  master RSS before → after (MB)", "", f"{big['rss_before']:.1f} → {big['rss_after']:.1f}",
                 "", "", ""))
    rows.append(("  master RSS per minion (kB)", "", f"{big['per_minion_kb']:.1f}", "", "", ""))
    sp = spool(count)
    rows.append((f"spool: {sp['events']:,} events queued while the master is down (s)", "",
                 f"{sp['queue_s']:.1f}", "", "", ""))
    rows.append(("  delivered after the master returns (s)", "", f"{sp['deliver_s']:.1f}", "",
                 "all, once, in order", "yes" if sp["ok"] else "NO"))
    lines = ["| measure | local bus (reference) | relay | relay / bus | target | met |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the relay benchmark table; ``argv`` (default none) may hold ``--quick``."""
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    args = parser.parse_args(argv or [])
    load = os.getloadavg()[0]
    print(f"# eventbus relay benchmark ({os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"load average {load:.1f} before)", flush=True)
    print(run(args.quick))
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
