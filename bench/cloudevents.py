"""CloudEvents ingest benchmark: signed, schema-validated 1 KB events against ``/hook`` in the same run.

``python -m bench.cloudevents`` starts a real master and ``eventbus api`` in a
temp dir, registers a type and a channel with the CLI, and measures:

1. structured mode: ``--clients`` processes, each on one keep-alive
   connection, POST signed 1 KB ``application/cloudevents+json`` events
   (each validated against a draft 2019-09 schema) for ``--seconds``;
   accepted events/s. The reference is ``POST /hook`` with the same body,
   clients and time (a token in ``X-Auth-Token``).
2. batch mode: the same clients, 100 events per request.
3. ingest -> bus latency: one client at ``--rate`` (500) events/s; a bus
   handle on the master stamps each ``cloudevents/*`` event's arrival;
   latency = arrival - the moment its request was sent; p50/p99.
Targets (issue 9): structured >= 5,000/s and >= 80% of /hook; batch >= 20,000/s; p99 <= 20 ms.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import multiprocessing
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from bench.measure import Pacer, percentile, wait_for
from bench.procs import EVENTBUS, Daemon, Node, free_port, short_tmpdir, write_config
from bench.report import Row, table

PASSWORD = "bench-password-123"
SCHEMA = {"$schema": "http://json-schema.org/draft/2019-09/schema#", "type": "object",
          "properties": {"order": {"type": "integer", "minimum": 0}, "note": {"type": "string"}},
          "required": ["order", "note"]}
BATCH = 100


def _event(n: int, tag: str) -> dict:
    return {"specversion": "1.0", "id": f"{tag}-{n}", "source": "/bench", "type": "bench.order",
            "version": "1.0", "datacontenttype": "application/json",
            "data": {"order": n, "note": "x" * 780}}


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _client(port: int, mode: str, secret: str, token: str, seconds: float, start_at: float,
            results: Any) -> None:
    """One client process: POST for ``seconds`` on one connection; puts (events accepted, errors)."""
    tag = uuid.uuid4().hex[:8]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    accepted = errors = n = 0
    while time.time() < start_at:
        time.sleep(0.005)
    end = start_at + seconds
    while time.time() < end:
        if mode == "batch":
            body = json.dumps([_event(n + i, tag) for i in range(BATCH)]).encode()
            headers = {"Content-Type": "application/cloudevents-batch+json", "X-Hub-Signature": _sign(secret, body)}
            path, count = "/cloudevents/bench", BATCH
        else:
            body = json.dumps(_event(n, tag)).encode()
            count = 1
            if mode == "hook":
                headers, path = {"Content-Type": "application/json", "X-Auth-Token": token}, "/hook/bench"
            else:
                headers = {"Content-Type": "application/cloudevents+json", "X-Hub-Signature": _sign(secret, body)}
                path = "/cloudevents/bench"
        n += count
        conn.request("POST", path, body, headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status == 200:
            accepted += count
        else:
            errors += 1
            if errors == 1:
                print(f"bench.cloudevents: {mode}: {answer.status}", flush=True, file=sys.stderr)
    conn.close()
    results.put((accepted, errors))


class Setup:
    def __init__(self) -> None:
        self.root = short_tmpdir("ebc")
        self.node = Node(self.root, "master", sock_dir="m", log_level="warning")
        self.conf = self.node.config_dir
        self.port = free_port()
        write_config(self.conf, "api", root_dir=str(self.root), port=self.port, log_level="warning",
                     master_config="master", external_auth={"file": {"users_file": "users", "bench": ["*"]}})
        run = lambda *a, **k: subprocess.run([EVENTBUS, *a, "-c", str(self.conf)], check=True,  # noqa: E731
                                             capture_output=True, text=True, **k)
        run("user", "add", "bench", "--password-stdin", input=PASSWORD + "\n")
        (self.root / "schema.json").write_text(json.dumps(SCHEMA))
        run("eventtype", "add", "bench.order", "--schema", str(self.root / "schema.json"))
        run("eventtype", "finalize", "bench.order", "--version", "1.0")
        self.secret = run("channel", "add", "bench").stdout.splitlines()[0].split(" ", 1)[1]
        self.api = Daemon.eventbus("api", self.conf)

    def start(self) -> None:
        import requests

        self.node.start(timeout=30)
        self.api.start()

        def token() -> str | None:
            self.api.check_alive()
            try:
                answer = requests.post(f"http://127.0.0.1:{self.port}/login", timeout=10,
                                       json={"username": "bench", "password": PASSWORD, "eauth": "file"})
                return answer.json()["return"][0]["token"] if answer.status_code == 200 else None
            except requests.RequestException:
                return None
        self.token = wait_for(token, 30, interval=0.05, what="the API to log in")

    def stop(self) -> None:
        import shutil

        self.api.stop()
        self.node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def rate(setup: Setup, mode: str, clients: int, seconds: float) -> tuple[float, int]:
    """Accepted events/s over ``clients`` processes for ``seconds``, and the number of refused requests."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 0.5
    procs = [context.Process(target=_client, args=(setup.port, mode, setup.secret, setup.token, seconds,
                                                   start_at, results)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    totals = [results.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(a for a, _ in totals) / seconds, sum(e for _, e in totals)


def latency(setup: Setup, per_second: int, seconds: float) -> tuple[float, float]:
    """p50 and p99 ms from sending a signed event to its ``cloudevents/*`` arrival on the master bus."""
    from eventbus.event import MasterEvent

    arrived: dict[str, float] = {}
    listener = MasterEvent(setup.node.sock_dir, opts=setup.node.settings, listen=True)
    listener.subscribe("cloudevents/")
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            ev = listener.get_event(wait=0.1, full=True)
            if ev is not None:
                arrived[ev["data"]["id"]] = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", setup.port, timeout=30)

    def post(ce_id: str) -> None:
        ev = _event(0, "lat")
        ev["id"] = ce_id
        body = json.dumps(ev).encode()
        conn.request("POST", "/cloudevents/bench", body, {"Content-Type": "application/cloudevents+json",
                                                          "X-Hub-Signature": _sign(setup.secret, body)})
        conn.getresponse().read()
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    warm = f"warm-{uuid.uuid4().hex}"
    wait_for(lambda: post(warm) or warm in arrived, 30, interval=0.1, what="the listener to see a first event")
    sent: dict[str, float] = {}
    pacer = Pacer(per_second)
    for i in range(int(per_second * seconds)):
        pacer.wait(i)
        ce_id = f"lat-{uuid.uuid4().hex}"
        sent[ce_id] = time.perf_counter()
        post(ce_id)
    wait_for(lambda: all(k in arrived for k in sent), 30, what="every latency event on the bus")
    stop.set()
    thread.join()
    listener.destroy()
    conn.close()
    values = [(arrived[k] - t) * 1000 for k, t in sent.items()]
    return percentile(values, 50), percentile(values, 99)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.cloudevents", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args(argv)
    setup = Setup()
    try:
        setup.start()
        hook, hook_errors = rate(setup, "hook", args.clients, args.seconds)
        structured, ce_errors = rate(setup, "structured", args.clients, args.seconds)
        batch, batch_errors = rate(setup, "batch", args.clients, args.seconds)
        p50, p99 = latency(setup, args.rate, min(args.seconds, 5.0))
    finally:
        setup.stop()
    rows = [
        Row("structured 1 KB, signed + schema", "events/s", structured, hook, ">= 5,000/s and >= 80% of /hook",
            structured >= 5000 and structured >= 0.8 * hook),
        Row("batch of 100, signed + schema", "events/s", batch, None, ">= 20,000/s", batch >= 20000),
        Row(f"ingest -> bus p50 at {args.rate}/s", "ms", p50),
        Row(f"ingest -> bus p99 at {args.rate}/s", "ms", p99, None, "<= 20 ms", p99 <= 20),
    ]
    text = "\n".join(["## CloudEvents ingest (`python -m bench.cloudevents`)", "",
                      f"{args.clients} client processes, {args.seconds:g} s each; reference: `POST /hook` with "
                      f"the same 1 KB body. Refused requests: hook {hook_errors}, structured {ce_errors}, "
                      f"batch {batch_errors}.", "",
                      table(rows, "/cloudevents", "/hook"), ""])
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
