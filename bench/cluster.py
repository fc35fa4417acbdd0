"""Benchmark: the fleet-wide bus on a real 3-node NATS JetStream cluster (issue 22's targets).

``python -m bench.cluster`` starts three ``nats-server`` nodes on loopback (``eventbus.cli.natscluster``),
two masters with ``cluster`` (stream replicas 3) and a REST API on master 2, then measures:

1. **Export throughput.** A burst of ``--events`` (20,000) 100-byte events is fired on master 1 while its
   cluster process is stopped (SIGSTOP); from its SIGCONT to the stream holding the last event. The
   reference, measured first in the same run, is a bare nats-py JetStream publisher making the same
   subjects, bodies and headers from the same events and writing them to a stream of its own, every ack
   awaited, as pipelined as the exporter (``DEPTH`` batches of ``BATCH`` in flight).
2. **Fire on master 1 → SSE on master 2**, ``--rate`` (500) events/s for ``--seconds`` (20): each event
   carries its fire time; the API on master 2 streams the fleet, and the latency is the arrival on the
   SSE client minus the fire time (same host, same clock). The reference is master 2's own bus (a plain
   subscriber on master 2 seeing master 1's imported copy).
3. **Catch-up after an outage.** The three nodes are SIGKILLed, master 1 takes ``--rate`` events/s for
   ``--outage`` (60) s, the nodes are started again; then the time until the stream holds every one of
   them, in order. The reference is the outage's own length.

The table goes to stdout, the figures to ``bench/results/cluster-<date>.json``; progress to stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from bench.measure import load_note, percentile, wait_until
from bench.procs import EVENTBUS, Daemon, Node, free_port, short_tmpdir, write_config
from bench.report import Row, table
from eventbus import event, systemstatus
from eventbus.cli.natscluster import NatsCluster
from eventbus.cluster import records
from eventbus.daemon.cluster.exporter import BATCH, DEPTH

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "bench-cluster-password"
TARGET_EXPORT = 0.5
TARGET_P99_MS = 50.0


def progress(text: str) -> None:
    print(f"cluster: {text}", file=sys.stderr, flush=True)


def payload(n: int) -> dict:
    return {"n": n, "pad": "x" * 80}


# -- the reference publisher -------------------------------------------------------------------------

async def _bare_publish(urls: list[str], count: int) -> float:
    """Events a second a bare nats-py publisher stores, acks awaited, as pipelined as the exporter
    (``DEPTH`` batches of ``BATCH`` in flight)."""
    import nats
    from nats.js.api import StreamConfig

    client = await nats.connect(urls)
    js = client.jetstream(timeout=10)
    await js.add_stream(StreamConfig(name="BENCHREF", subjects=["benchref.>"], num_replicas=3))
    events = [(n, "bench/ref", payload(n)) for n in range(count)]
    started = time.perf_counter()
    inflight: list[list] = []
    for first in range(0, count, BATCH):
        # The messages made as it goes, from the events, as the exporter makes them.
        inflight.append([await js.publish_async(records.subject_for("benchref", tag), records.body(n, tag, data),
                                                headers=records.headers(f"ref:{n}", "ref"))
                         for n, tag, data in events[first:first + BATCH]])
        if len(inflight) == DEPTH:
            for future in inflight.pop(0):
                await future
    for batch in inflight:
        for future in batch:
            await future
    elapsed = time.perf_counter() - started
    await client.close()
    return count / elapsed


async def _stream_last(urls: list[str], stream: str) -> int:
    import nats

    client = await nats.connect(urls)
    try:
        return (await client.jetstream(timeout=10).stream_info(stream)).state.last_seq
    finally:
        await client.close()


def stream_last(urls: list[str], stream: str = "FLEET") -> int:
    for _ in range(50):
        try:
            return asyncio.run(_stream_last(urls, stream))
        except Exception:  # a leader election: ask again
            time.sleep(0.2)
    raise RuntimeError(f"stream {stream} did not answer")


async def _tagged_numbers(urls: list[str], stream: str, tag: str) -> list[int]:
    import nats

    client = await nats.connect(urls)
    out: list[int] = []
    try:
        js = client.jetstream(timeout=10)
        state = (await js.stream_info(stream)).state
        for first in range(state.first_seq, state.last_seq + 1, 500):
            messages = await asyncio.gather(*(js.get_msg(stream, s) for s in range(first, min(first + 500,
                                                                                             state.last_seq + 1))))
            for message in messages:
                record = json.loads(message.data)
                if record["tag"] == tag:
                    out.append(record["data"]["n"])
    finally:
        await client.close()
    return out


# -- the run -----------------------------------------------------------------------------------------

class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = short_tmpdir("ebcl")
        self.cluster = NatsCluster(self.root / "nats")
        self.masters: list[Node] = []
        self.api: Daemon | None = None
        self.port = free_port()

    def start_master(self, n: int) -> Node:
        key = {"servers": self.cluster.urls, "stream": "FLEET", "replicas": 3, "subject_prefix": "fleet"}
        node = Node(short_tmpdir(f"ebc{n}"), "master", id=f"bench{n}", cluster=key, log_level="warning")
        node.start(timeout=30)
        self.masters.append(node)
        wait_until(lambda: (systemstatus.read_cluster(node.settings) or {}).get("state") == "up", 60,
                   f"{node.keys['id']} up in the cluster")
        return node

    def start(self) -> None:
        """The cluster and master 1 (the export is measured alone: no other master imports meanwhile)."""
        progress("starting 3 nats-server nodes and master 1")
        self.cluster.start()
        self.cluster.wait_ready()
        self.start_master(1)

    def start_rest(self) -> None:
        """Master 2 and the REST API on it."""
        progress("starting master 2 and its REST API")
        self.start_master(2)
        conf = self.masters[1].config_dir
        write_config(conf, "api", root_dir=str(self.masters[1].root), port=self.port, log_level="warning",
                     master_config="master", external_auth={"file": {"users_file": "users", "bench": ["*"]}})
        subprocess.run([EVENTBUS, "user", "add", "bench", "--password-stdin", "-c", str(conf)],
                       input=PASSWORD + "\n", text=True, check=True, capture_output=True)
        self.api = Daemon.eventbus("api", conf)
        self.api.start()
        wait_until(self._logs_in, 30, "the API on master 2")

    def _logs_in(self) -> bool:
        try:
            return bool(self.token())
        except Exception:  # the API is still starting
            return False

    def token(self) -> str:
        import requests

        answer = requests.post(f"http://127.0.0.1:{self.port}/login", timeout=10,
                               json={"username": "bench", "password": PASSWORD, "eauth": "file"})
        answer.raise_for_status()
        return answer.json()["return"][0]["token"]

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop(15)
        for node in self.masters:
            node.stop()
            node.cleanup()
        self.cluster.close()

    # -- 1. export throughput ------------------------------------------------------------------

    def export(self) -> dict:
        """The exporter's own rate: master 1's cluster process is stopped (SIGSTOP) while the burst is fired,
        then let go; the time from then until the stream holds the last event."""
        count = self.args.events
        progress(f"reference: a bare nats-py publisher, {count:,} events with acks")
        bare = asyncio.run(_bare_publish(self.cluster.urls, count))
        progress(f"export: {count:,} events fired on master 1, then exported")
        master = self.masters[0]
        child = (systemstatus.read_cluster(master.settings) or {})["pid"]
        before = stream_last(self.cluster.urls)
        os.kill(child, signal.SIGSTOP)
        try:
            with event.MasterEvent(opts=master.opts(), listen=False) as handle:
                for n in range(count):
                    handle.fire_event(payload(n), "bench/export")
        finally:
            started = time.perf_counter()
            os.kill(child, signal.SIGCONT)
        wait_until(lambda: stream_last(self.cluster.urls) - before >= count, 300, "the burst on the stream",
                   interval=0.02)
        elapsed = time.perf_counter() - started
        return {"export_events": count, "export_rate": count / elapsed, "bare_rate": bare}

    # -- 2. fire on master 1 -> SSE on master 2 ---------------------------------------------------

    def latency(self) -> dict:
        import requests

        rate, seconds = self.args.rate, self.args.seconds
        total = int(rate * seconds)
        sse: list[float] = []
        bus: list[float] = []
        ready = threading.Event()

        def read_sse() -> None:
            with requests.get(f"http://127.0.0.1:{self.port}/events", params={"token": self.token(),
                              "tag": "bench/latency*"}, stream=True, timeout=(10, 60)) as answer:
                ready.set()
                for line in answer.iter_lines():
                    if line.startswith(b"data: "):
                        now = time.time()
                        sent = json.loads(line[6:])["data"]["sent"]
                        sse.append(now - sent)
                        if len(sse) >= total:
                            return

        def read_bus() -> None:
            with event.MasterEvent(opts=self.masters[1].opts(), listen=True) as handle:
                handle.subscribe("bench/latency")
                while len(bus) < total:
                    item = handle.get_event(wait=30, tag="bench/latency")
                    if item is None:
                        return
                    bus.append(time.time() - item["sent"])

        def read_stream() -> None:
            asyncio.run(self._read_stream(stream_arrivals, total))

        stream_arrivals: list[float] = []
        readers = [threading.Thread(target=read_sse, daemon=True), threading.Thread(target=read_bus, daemon=True),
                   threading.Thread(target=read_stream, daemon=True)]
        for reader in readers:
            reader.start()
        ready.wait(30)
        time.sleep(1.0)
        progress(f"latency: {rate:g} events/s on master 1 for {seconds:g} s")
        with event.MasterEvent(opts=self.masters[0].opts(), listen=False) as handle:
            next_at = time.monotonic()
            for n in range(total):
                handle.fire_event({"n": n, "sent": time.time()}, "bench/latency")
                next_at += 1.0 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))
        for reader in readers:
            reader.join(60)
        ms = lambda values, q: percentile(values, q) * 1000 if values else float("nan")  # noqa: E731
        return {"latency_events": total, "sse_received": len(sse), "bus_received": len(bus),
                "stream_received": len(stream_arrivals),
                "sse_p50_ms": ms(sse, 50), "sse_p99_ms": ms(sse, 99), "bus_p50_ms": ms(bus, 50),
                "bus_p99_ms": ms(bus, 99), "stream_p50_ms": ms(stream_arrivals, 50),
                "stream_p99_ms": ms(stream_arrivals, 99)}

    async def _read_stream(self, arrivals: list[float], total: int) -> None:
        """A bare nats-py reader of the stream (an ordered consumer from now): each event's arrival there."""
        import nats
        from nats.js.api import DeliverPolicy

        client = await nats.connect(self.cluster.urls)
        try:
            sub = await client.jetstream().subscribe("fleet.bench.latency", ordered_consumer=True,
                                                     deliver_policy=DeliverPolicy.NEW)
            while len(arrivals) < total:
                try:
                    message = await sub.next_msg(timeout=30)
                except nats.errors.TimeoutError:
                    return
                arrivals.append(time.time() - json.loads(message.data)["data"]["sent"])
        finally:
            await client.close()

    # -- 3. catch-up after an outage ------------------------------------------------------------------

    def outage(self) -> dict:
        rate, outage = self.args.rate, self.args.outage
        total = int(rate * outage)
        progress(f"outage: the 3 nodes killed, {rate:g} events/s on master 1 for {outage:g} s")
        self.cluster.kill_all()
        with event.MasterEvent(opts=self.masters[0].opts(), listen=False) as handle:
            next_at = time.monotonic()
            for n in range(total):
                handle.fire_event(payload(n), "bench/outage")
                next_at += 1.0 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))
        progress("outage: the nodes start again")
        back = time.perf_counter()
        self.cluster.start()
        self.cluster.wait_ready()
        ready_s = time.perf_counter() - back
        status = lambda: systemstatus.read_cluster(self.masters[0].settings) or {}  # noqa: E731
        wait_until(lambda: status().get("state") == "up" and status().get("export_lag") == 0, 600,
                   "master 1 caught up", interval=0.1)
        caught_up = time.perf_counter() - back
        stored = asyncio.run(_tagged_numbers(self.cluster.urls, "FLEET", "bench/outage"))
        return {"outage_events": total, "outage_stored": len(stored), "outage_in_order": stored == list(range(total)),
                "outage_distinct": len(set(stored)), "cluster_ready_s": ready_s, "catch_up_s": caught_up,
                "outage_s": outage}


def report(f: dict) -> tuple[str, bool]:
    ratio = f["export_rate"] / f["bare_rate"]
    whole = f["outage_in_order"] and f["outage_stored"] == f["outage_events"]
    rows = [
        Row(f"export throughput, {f['export_events']:,} events of 100 B (reference: bare nats-py publisher, "
            "acks awaited)", "events/s", f["export_rate"], f["bare_rate"], f"≥ {TARGET_EXPORT:.0%}",
            ratio >= TARGET_EXPORT),
        Row(f"fire on master 1 → SSE on master 2, p99 at {f['rate']:g}/s (reference: a bare nats-py reader of the "
            "stream)", "ms", f["sse_p99_ms"], f["stream_p99_ms"], f"≤ {TARGET_P99_MS:g} ms",
            f["sse_p99_ms"] <= TARGET_P99_MS, "times"),
        Row("… p50", "ms", f["sse_p50_ms"], f["stream_p50_ms"], "", None, "times"),
        Row("… fire on master 1 → master 2's bus (imported), p99 and p50", "ms", f["bus_p99_ms"],
            f["bus_p50_ms"], "", None, "times"),
        Row("… events received on SSE of those fired", "events", f["sse_received"], f["latency_events"],
            "all", f["sse_received"] == f["latency_events"]),
        Row(f"catch-up after a {f['outage_s']:g} s outage at {f['rate']:g}/s: events on the stream once, in order",
            "events", f["outage_stored"], f["outage_events"], "all, in order", whole),
        Row("… time from the nodes' restart until master 1 has exported them all (reference: the outage)", "s",
            f["catch_up_s"], f["outage_s"], "", None, "times"),
    ]
    passed = all(row.verdict for row in rows if row.verdict is not None)
    header = (f"## Fleet-wide bus ({f['date']}; `{f['command']}`; load {f['load_before']} → {f['load_after']})\n\n")
    return header + table(rows) + "\n", passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="export burst (default 20,000)")
    parser.add_argument("--rate", type=float, default=500.0, help="events/s for latency and outage (500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency phase, s (20)")
    parser.add_argument("--outage", type=float, default=60.0, help="cluster outage, s (60)")
    args = parser.parse_args(argv)
    load_before = load_note()
    run = Run(args)
    try:
        run.start()
        figures: dict[str, Any] = {"rate": args.rate}
        figures.update(run.export())
        run.start_rest()
        figures.update(run.latency())
        figures.update(run.outage())
    finally:
        run.stop()
    figures["load_before"], figures["load_after"] = load_before, load_note()
    figures["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    figures["command"] = "python -m bench.cluster " + " ".join(argv if argv is not None else sys.argv[1:])
    text, passed = report(figures)
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"cluster-{time.strftime('%Y-%m-%dT%H%M', time.gmtime())}.json"
    out.write_text(json.dumps(figures, indent=1, default=str))
    progress(f"figures written to {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
