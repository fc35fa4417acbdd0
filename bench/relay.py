"""Benchmark of the master/minion link: relay throughput and latency, 1,000 minions, the spool.

``python -m bench.relay`` prints a Markdown table. Every relay figure is
reported next to the local bus measured the same way in the same run (the
reference), so the ratio says what the link costs on this machine.

- throughput: N events of ~100 B fired as fast as one client can, counted
  by a subscriber process on the master bus (local bus: ``fire_event`` on the
  master; relay: ``fire_master`` on a minion, the master's per-minion relay
  budget off, so the figure is the link's capacity);
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
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import median, percentile, wait_for
from bench.procs import Node, Site, link_state, wait_link

PAD = "x" * 60  # with the counter and the tag, about 100 B packed


# -- daemons ---------------------------------------------------------------------------


def _site(heartbeat: float = 2.0) -> Site:
    """A master and minions on free ports, logging only warnings (logging is not what is measured)."""
    return Site(heartbeat=heartbeat, log_level="warning")


def _master(site: Site) -> Node:
    # A subscriber starved of CPU by other jobs must not be dropped from under the count. The per-minion relay
    # budget is off: this measures what the link carries; with the default budget (relay_rate_limit, 20,000
    # events/s) one minion's relay is held to that after a 2 s burst.
    return site.master(auto_accept=True, subscriber_queue=1_000_000, relay_rate_limit=0)


def _linked(site: Site) -> tuple[Node, Node]:
    """A running master and a running minion whose link it accepted."""
    master = _master(site)
    master.start(timeout=20)
    minion = site.minion("bench-minion")
    minion.start(timeout=20)
    wait_link(minion, "accept", timeout=30)
    return master, minion


# -- the subscriber process ------------------------------------------------------------


def _subscribe(conf: str, tag: str, count: int, ready: Any, results: Any) -> None:
    """Count ``count`` events under ``tag`` on the master bus; send back (first, last, latencies, ns)."""
    from eventbus import config, event

    opts = config.load(config.MasterConfig, Path(conf))
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

    def __init__(self, master: Node, tag: str, count: int) -> None:
        self.ready = multiprocessing.Event()
        self.parent, child = multiprocessing.Pipe()
        self.proc = multiprocessing.Process(target=_subscribe, args=(str(master.path), tag, count, self.ready, child))
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


def _sender(sender: Node) -> Any:
    from eventbus import event

    if sender.name == "minion":
        return event.MinionEvent(opts=sender.settings, listen=False)
    return event.MasterEvent(opts=sender.settings, listen=False)


def throughput(master: Node, sender: Node, count: int) -> float:
    """Events per second from one sender (the master's bus, or relayed by a minion) to a master-bus subscriber."""
    relay = sender.name == "minion"
    sub = Subscriber(master, "bench/tp", count)
    handle = _sender(sender)
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
                           f"dropped {lost} for the subscriber); logs in {master.root} and {sender.root}")
    return count / (last - start)


def latency(master: Node, sender: Node, rate: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) in ms from send to a master-bus subscriber at ``rate`` events/s."""
    relay = sender.name == "minion"
    count = int(rate * seconds)
    sub = Subscriber(master, "bench/lat", count)
    handle = _sender(sender)
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
    lat_ms = [x / 1e6 for x in lat]
    return median(lat_ms), percentile(lat_ms, 99)


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def _many_minions(ret_port: int, server_key: bytes, first: int, count: int, heartbeat: float,
                  seconds: float, ready: Any) -> None:
    """``count`` CURVE minion connections that say hello and ping every heartbeat for ``seconds``."""
    import zmq

    from eventbus.daemon.link import protocol

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
        sock.send_multipart(protocol.hello(f"scale-{n:04d}"))
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
                sock.send_multipart(protocol.PING_MESSAGE, zmq.NOBLOCK)
    context.destroy(0)


def scale(minions: int, processes: int) -> dict[str, float]:
    """Master RSS and presence with ``minions`` CURVE connections from ``processes`` processes."""
    import zmq.auth

    site = _site(heartbeat=2.0)
    try:
        master = _master(site)
        pid = master.start(timeout=20).pid
        time.sleep(0.5)
        rss_before = _rss_mb(pid)
        server_key, _ = zmq.auth.load_certificate(master.settings.pki_dir / "master.key")
        per = minions // processes
        procs = []
        start = time.perf_counter()
        for index in range(processes):
            ready = multiprocessing.Event()
            proc = multiprocessing.Process(target=_many_minions, args=(
                site.ret_port, server_key, index * per, per, 2.0, 60.0, ready))
            proc.start()
            procs.append((proc, ready))
        for _, ready in procs:
            ready.wait(60)
        wait_for(lambda: len(link_state(master)["present"]) == per * processes, timeout=60, what="every minion")
        up = time.perf_counter() - start
        time.sleep(5)  # a few heartbeat rounds: nobody may drop out
        present = len(link_state(master)["present"])
        rss_after = _rss_mb(pid)
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.join()
        wait_for(lambda: len(link_state(master)["present"]) == 0, timeout=10, what="no minion present")
        return {"minions": per * processes, "present": present, "up_s": up, "rss_before": rss_before,
                "rss_after": rss_after, "per_minion_kb": (rss_after - rss_before) * 1000 / (per * processes)}
    finally:
        site.cleanup()


def spool(count: int) -> dict[str, float]:
    """Relay ``count`` events while the master is down; time their delivery once it is back."""
    site = _site()
    try:
        master, minion = _linked(site)
        master.stop()
        wait_link(minion, "connecting", timeout=30)
        handle = _sender(minion)
        queued_at = time.perf_counter()
        for n in range(count):
            handle.fire_master({"n": n, "t": 0, "pad": PAD}, "bench/spool", 5000)
        handle.destroy()
        wait_for(lambda: link_state(minion)["spooled"] >= count, timeout=120, what="every event spooled")
        queue_s = time.perf_counter() - queued_at
        # The subscriber must be live on the new master before the minion reconnects, so the
        # minion is frozen meanwhile; the clock starts when it thaws (its reconnect backoff counts).
        minion.daemon.signal(signal.SIGSTOP)
        try:
            master.start(timeout=20)
            sub = Subscriber(master, "bench/spool", count)
        finally:
            minion.daemon.signal(signal.SIGCONT)
        start = time.perf_counter()
        _first, last, _lat, ns, _lost = sub.result(timeout=300)
        deliver_s = last - start
        in_order_once = ns == list(range(count))
        wait_for(lambda: link_state(minion)["spooled"] == 0, timeout=30, what="an empty spool")
        return {"events": count, "queue_s": queue_s, "deliver_s": deliver_s, "ok": in_order_once}
    finally:
        site.cleanup()


def run(quick: bool = False) -> str:
    """Run every measurement; return the Markdown table."""
    count = 20_000 if quick else 100_000
    rows = []
    site = _site()
    keep = False
    try:
        master, minion = _linked(site)
        bus_tp = throughput(master, master, count)
        relay_tp = throughput(master, minion, count)
        bus_lat = latency(master, master, 500, 2 if quick else 4)
        relay_lat = latency(master, minion, 500, 2 if quick else 4)
    except (RuntimeError, AssertionError):
        keep = True  # the daemons' logs say what went wrong
        raise
    finally:
        site.cleanup(keep)
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
