"""REST API benchmark: 1,000 concurrent ``/events`` streams, and one ``curl -N`` reader's throughput.

``python -m bench.api`` starts a real master and ``eventbus api`` in a temp
dir and prints a markdown table. Figures are compared with a reference
measured in the same run: a plain bus handle (``eventbus.event``) reading
the same events straight from the master, i.e. what the API adds.

1. Fan-out: ``--streams`` clients (default 1,000) hold ``/events`` open from
   a separate reader process (non-blocking sockets, one selector); the bench
   fires ``--rate`` events/s (default 200) for ``--seconds`` and checks every
   client got every event, in order and none lost; latency fire->read is
   sampled on every 20th client; ``/login`` is timed meanwhile. Memory per
   idle stream is the API process's RSS growth for the open, idle streams.
2. Throughput: one ``curl -sN`` reader, ``--burst`` events fired as fast as
   one producer can.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from bench.measure import percentile, wait_for
from bench.procs import EVENTBUS, Daemon, Node, free_port, raise_fd_limit, short_tmpdir, write_config

PASSWORD = "bench-password-123"
ID_MARK = b"\nid: "
STAMP = re.compile(rb'"t": (\d+\.\d+), "_stamp"')


# -- set-up ----------------------------------------------------------------------------------

class Setup:
    """A master and an API in a temp dir, as real processes."""

    def __init__(self, streams: int) -> None:
        self.root = short_tmpdir("ebb")
        self.node = Node(self.root, "master", sock_dir="m", log_level="warning")
        self.conf = self.node.config_dir
        self.port = free_port()
        write_config(self.conf, "api", root_dir=str(self.root), port=self.port, log_level="warning",
                     master_config="master", stream_limit=streams + 100,
                     external_auth={"file": {"users_file": "users", "bench": ["*"]}})
        subprocess.run([EVENTBUS, "user", "add", "bench", "--password-stdin", "-c", str(self.conf)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
        self.api_daemon = Daemon.eventbus("api", self.conf)

    def start(self) -> None:
        self.node.start(timeout=30)
        self.master = self.node.settings
        self.api_daemon.start()
        self.api = self.api_daemon.proc

        def answers() -> bool:
            self.api_daemon.check_alive()
            try:
                return bool(self.login())
            except Exception:  # requests' own errors while the API comes up
                return False
        wait_for(answers, 30, interval=0.05, what="the API to log in")

    def login(self) -> str:
        import requests

        answer = requests.post(f"http://127.0.0.1:{self.port}/login", timeout=10,
                               json={"username": "bench", "password": PASSWORD, "eauth": "file"})
        answer.raise_for_status()
        return answer.json()["return"][0]["token"]

    def stop(self) -> None:
        self.api_daemon.stop(15)
        self.node.stop()
        self.node.cleanup()


# -- readers (separate processes) ------------------------------------------------------------------

def stream_readers(port: int, token: str, count: int, tag: str, expected: int, sample_every: int,
                   ready: Any, results: Any, deadline_s: float) -> None:
    """Hold ``count`` /events streams on one selector; report per-stream counts and sampled latencies."""
    raise_fd_limit()
    selector = selectors.DefaultSelector()
    request = f"GET /events?token={token}&tag={tag} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    socks = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        socks.append(sock)
    counts = [0] * count
    started = [False] * count
    tails = [b""] * count
    gaps = [0] * count
    latencies: list[float] = []
    open_streams = 0
    announced = False
    deadline = time.monotonic() + deadline_s
    done: set[int] = set()
    while time.monotonic() < deadline and len(done) < count:
        for key, _ in selector.select(timeout=0.5):
            index = key.data
            try:
                data = key.fileobj.recv(1 << 18)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            now = time.time()
            if not data:
                selector.unregister(key.fileobj)
                done.add(index)
                continue
            if not started[index]:
                started[index] = True
                open_streams += 1
            chunk = tails[index] + data
            before = counts[index]
            counts[index] += chunk.count(ID_MARK)
            tails[index] = chunk[-4:]
            if b"eventbus/stream/gap" in data:
                gaps[index] += 1
            if index % sample_every == 0:
                latencies.extend(now - float(m.group(1)) for m in STAMP.finditer(data))
            if before < expected <= counts[index]:
                done.add(index)
        if not announced and open_streams == count:
            announced = True
            ready.set()
    for sock in socks:
        sock.close()
    results.put({"counts": counts, "gaps": sum(gaps), "latencies": latencies})


def bus_reader(sock_dir: str, tag: str, expected: int, ready: Any, results: Any, deadline_s: float) -> None:
    """The reference: a plain bus handle reading the same events from the master."""
    from eventbus import event

    with event.get_event("master", sock_dir=sock_dir) as bus:
        ready.set()
        latencies = []
        got = 0
        first = last = 0.0
        deadline = time.monotonic() + deadline_s
        while got < expected and time.monotonic() < deadline:
            data = bus.get_event(wait=1, tag=tag)
            if data is None:
                continue
            now = time.time()
            got += 1
            first = first or now
            last = now
            if "t" in data:
                latencies.append(now - data["t"])
    results.put({"got": got, "latencies": latencies, "seconds": last - first})


def fire(sock_dir: str, tag: str, count: int, rate: float | None) -> float:
    """Fire ``count`` events ``{"n", "t"}`` at ``rate``/s (as fast as possible if ``None``); the time it took."""
    from eventbus import event

    with event.get_event("master", sock_dir=sock_dir, listen=False) as bus:
        start = time.monotonic()
        for n in range(count):
            if rate:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if not bus.fire_event({"n": n, "t": time.time()}, tag, timeout=5000):
                raise SystemExit("bench: the master did not take an event")
        return time.monotonic() - start


# -- phases ---------------------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``: ``bench.measure.percentile`` on the benchmark's scale."""
    return percentile(values, q * 100)


def fanout(setup: Setup, streams: int, rate: float, seconds: float) -> dict:
    spawn = multiprocessing.get_context("spawn")
    token = setup.login()
    expected = int(rate * seconds)
    api = psutil.Process(setup.api.pid)
    idle_logins = []
    for _ in range(10):
        start = time.perf_counter()
        setup.login()
        idle_logins.append(time.perf_counter() - start)
    time.sleep(0.5)
    rss_before = api.memory_info().rss
    ready, bus_ready, results, bus_results = spawn.Event(), spawn.Event(), spawn.Queue(), spawn.Queue()
    reader = spawn.Process(target=stream_readers, args=(setup.port, token, streams, "bench/fan", expected, 20,
                                                        ready, results, seconds + 120))
    reference = spawn.Process(target=bus_reader, args=(str(setup.master.sock_dir), "bench/fan", expected,
                                                       bus_ready, bus_results, seconds + 120))
    opened = time.monotonic()
    reader.start()
    if not ready.wait(120):
        raise SystemExit("bench: the streams did not all open within 120 s")
    open_seconds = time.monotonic() - opened
    time.sleep(2.0)  # let them settle idle
    rss_idle = api.memory_info().rss
    threads = api.num_threads()
    reference.start()
    bus_ready.wait(30)
    time.sleep(0.5)
    logins: list[float] = []
    stop = threading.Event()

    def time_logins() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            setup.login()
            logins.append(time.perf_counter() - start)
            stop.wait(0.25)

    timer = threading.Thread(target=time_logins)
    timer.start()
    cpu_before = api.cpu_times()
    fired_in = fire(str(setup.master.sock_dir), "bench/fan", expected, rate)
    cpu_after = api.cpu_times()
    api_cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / fired_in
    got = results.get(timeout=seconds + 150)
    stop.set()
    timer.join()
    reader.join(30)
    ref = bus_results.get(timeout=60)
    reference.join(30)
    counts = got["counts"]
    return {
        "streams": streams, "rate": rate, "events": expected, "fired_in": fired_in, "open_seconds": open_seconds,
        "complete": sum(1 for c in counts if c == expected), "min_count": min(counts), "max_count": max(counts),
        "gaps": got["gaps"], "p50": _pct(got["latencies"], 0.5), "p99": _pct(got["latencies"], 0.99),
        "samples": len(got["latencies"]), "ref_p50": _pct(ref["latencies"], 0.5),
        "ref_p99": _pct(ref["latencies"], 0.99), "ref_got": ref["got"],
        "rss_per_stream": (rss_idle - rss_before) / streams, "threads": threads,
        "login_p50": _pct(logins, 0.5), "login_p99": _pct(logins, 0.99), "login_max": max(logins),
        "logins": len(logins), "idle_login_p50": _pct(idle_logins, 0.5), "api_cpu": api_cpu, "load": os.getloadavg()[0],
    }


def throughput(setup: Setup, burst: int) -> dict:
    spawn = multiprocessing.get_context("spawn")
    sock_dir = str(setup.master.sock_dir)
    # Reference: a plain bus handle reading a burst.
    bus_ready, bus_results = spawn.Event(), spawn.Queue()
    reference = spawn.Process(target=bus_reader, args=(sock_dir, "bench/ref", burst, bus_ready, bus_results, 120))
    reference.start()
    bus_ready.wait(30)
    time.sleep(0.3)
    fire(sock_dir, "bench/ref", burst, None)
    ref = bus_results.get(timeout=150)
    reference.join(30)
    # One curl -N reader of the API.
    token = setup.login()
    curl = subprocess.Popen(["curl", "-sN", f"http://127.0.0.1:{setup.port}/events?token={token}&tag=bench/tp"],
                            stdout=subprocess.PIPE)
    assert curl.stdout is not None
    curl.stdout.read1(4096)  # retry: 400 - the stream is open
    producer = threading.Thread(target=fire, args=(sock_dir, "bench/tp", burst, None))
    producer.start()
    count, tail, first, last = 0, b"", 0.0, 0.0
    deadline = time.monotonic() + 120
    while count < burst and time.monotonic() < deadline:
        data = curl.stdout.read1(1 << 20)
        if not data:
            break
        now = time.monotonic()
        chunk = tail + data
        count += chunk.count(ID_MARK) + (1 if not first and chunk.startswith(b"id: ") else 0)
        tail = chunk[-4:]
        first = first or now
        last = now
    producer.join()
    curl.kill()
    curl.wait()
    seconds = last - first
    return {"burst": burst, "curl_got": count, "curl_rate": count / seconds if seconds else float("nan"),
            "ref_got": ref["got"], "ref_rate": ref["got"] / ref["seconds"] if ref["seconds"] else float("nan")}


def report(fan: dict, tp: dict) -> str:
    ms = 1000.0
    rows = [
        ("streams held / all events received", f"{fan['complete']} / {fan['streams']} "
         f"(each {fan['min_count']}..{fan['max_count']} of {fan['events']}, gap records {fan['gaps']})", ""),
        ("events fired", f"{fan['events']} at {fan['rate']:g}/s in {fan['fired_in']:.1f} s", ""),
        ("fire_event -> client read p50", f"{fan['p50'] * ms:.1f} ms", f"bus handle {fan['ref_p50'] * ms:.2f} ms "
         f"(x{fan['p50'] / fan['ref_p50']:.0f})"),
        ("fire_event -> client read p99", f"{fan['p99'] * ms:.1f} ms", f"bus handle {fan['ref_p99'] * ms:.2f} ms "
         f"(x{fan['p99'] / fan['ref_p99']:.0f})"),
        ("memory per idle stream (API RSS)", f"{fan['rss_per_stream'] / 1024:.0f} KiB", f"{fan['threads']} threads"),
        ("/login while streaming p50 / p99 / max", f"{fan['login_p50'] * ms:.0f} / {fan['login_p99'] * ms:.0f} / "
         f"{fan['login_max'] * ms:.0f} ms", f"idle API {fan['idle_login_p50'] * ms:.0f} ms (scrypt n=2^14 "
         f"is most of it); {fan['logins']} logins; target < 100 ms"),
        ("streams opened in", f"{fan['open_seconds']:.1f} s", ""),
        ("API CPU while streaming", f"{fan['api_cpu']:.0%} of one core",
         f"machine load average {fan['load']:.1f} on {os.cpu_count()} cores"),
        ("one curl -N reader", f"{tp['curl_rate']:,.0f} ev/s ({tp['curl_got']}/{tp['burst']})",
         f"bus handle {tp['ref_rate']:,.0f} ev/s (x{tp['curl_rate'] / tp['ref_rate']:.2f}); target >= 10,000"),
    ]
    lines = ["| measure | API | reference / note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    raise_fd_limit()
    setup = Setup(args.streams)
    try:
        setup.start()
        tp = throughput(setup, args.burst)  # first: no other stream shares the API's CPU
        fan = fanout(setup, args.streams, args.rate, args.seconds)
    finally:
        setup.stop()
    print(f"eventbus REST API bench ({os.cpu_count()} cores, python {sys.version.split()[0]})")
    print(report(fan, tp))
    if args.json:
        print(json.dumps({"fanout": fan, "throughput": tp}, indent=2))
    ok = fan["complete"] == fan["streams"] and tp["curl_got"] == tp["burst"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
