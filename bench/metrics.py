"""``GET /metrics`` cost: ms per scrape with no stream and with 1,000 ``/events`` streams open.

``python -m bench.metrics`` starts a real master and ``eventbus api`` (as
``bench.api`` does) and times ``--scrapes`` scrapes by an admin, against a
reference timed in the same run on the same connection kind: ``GET /`` (the
API's smallest answer). Then it opens ``--streams`` streams from a separate
reader process and times both again, idle and while ``--rate`` events/s are
fired (the streams are busy, the scrape asks the master meanwhile).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time

import requests

from bench.api import Setup, fire, stream_readers
from bench.measure import percentile
from bench.procs import raise_fd_limit


def timed(session: requests.Session, url: str, headers: dict, count: int) -> list[float]:
    """Seconds per GET of ``url``, ``count`` times (each answer checked and read whole)."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        answer = session.get(url, headers=headers, timeout=30)
        body = answer.content
        times.append(time.perf_counter() - start)
        if answer.status_code != 200 or not body:
            raise SystemExit(f"bench: GET {url} answered {answer.status_code}")
    return times


def series(setup: Setup, token: str, count: int) -> dict:
    base = f"http://127.0.0.1:{setup.port}"
    headers = {"X-Auth-Token": token}
    with requests.Session() as session:
        timed(session, base + "/metrics", headers, 5)  # warm: the collector's zmq context, connections
        scrape = timed(session, base + "/metrics", headers, count)
        index = timed(session, base + "/", {}, count)
        size = len(session.get(base + "/metrics", headers=headers, timeout=30).content)
    return {"scrape_p50": percentile(scrape, 50), "scrape_p99": percentile(scrape, 99),
            "index_p50": percentile(index, 50), "index_p99": percentile(index, 99), "bytes": size}


def run(streams: int, scrapes: int, rate: float) -> dict:
    setup = Setup(streams)
    spawn = multiprocessing.get_context("spawn")
    reader = None
    try:
        setup.start()
        token = setup.login()
        results: dict = {"none": series(setup, token, scrapes)}
        ready, done = spawn.Event(), spawn.Queue()
        reader = spawn.Process(target=stream_readers, args=(setup.port, token, streams, "bench/none", 10**9, 10**9,
                                                            ready, done, 3600))
        reader.start()
        if not ready.wait(180):
            raise SystemExit(f"bench: {streams} streams did not open within 180 s")
        time.sleep(1.0)
        results["idle"] = series(setup, token, scrapes)
        seconds = scrapes * 0.05 + 10
        firing = threading.Thread(target=fire, args=(str(setup.master.sock_dir), "bench/metrics",
                                                     int(rate * seconds), rate), daemon=True)
        firing.start()
        time.sleep(0.5)
        results["busy"] = series(setup, token, scrapes)
        return results
    finally:
        if reader is not None:
            reader.terminate()
            reader.join(10)
        setup.stop()


def report(results: dict, streams: int, rate: float) -> str:
    ms = 1000.0
    rows = []
    for key, label in (("none", "no stream"), ("idle", f"{streams} streams, idle"),
                       ("busy", f"{streams} streams, {rate:g} ev/s fired")):
        r = results[key]
        rows.append((f"GET /metrics, {label}", f"{r['scrape_p50'] * ms:.1f} / {r['scrape_p99'] * ms:.1f} ms",
                     f"GET / {r['index_p50'] * ms:.1f} / {r['index_p99'] * ms:.1f} ms "
                     f"(scrape - GET / = {(r['scrape_p50'] - r['index_p50']) * ms:.1f} ms); {r['bytes']} bytes"))
    lines = ["| measure | p50 / p99 | reference (same run) |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    raise_fd_limit()
    results = run(args.streams, args.scrapes, args.rate)
    print(f"eventbus /metrics bench ({os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"load {os.getloadavg()[0]:.1f})")
    print(report(results, args.streams, args.rate))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
