"""The reactor under load, in one run: ``python -m bench.reactor``.

Figures (each against a master started as a user would, ``eventbus master -c DIR``):

- throughput: a publisher process fires ``--events`` 100 B events flat out
  and a listener receives them all; the bus's delivered rate with 1,000
  reactor rules (the reactor reading and matching every event) against the
  same run with no rules, trials alternating. The reactor's own rate is the
  events it read and matched per second, first send to its catching up.
  Tags are all different (no matcher cache hits); 1 event in 1,000 matches
  a rule with a ``fire`` action.
- latency: at 500 events/s, event -> ``fire`` action: the time from the
  publisher's send to the action's event arriving at a listener (an upper
  bound of event -> action start), p50/p99.
- 100 slow ``run`` actions (sleep 2 s) in flight while ``fire`` actions run
  at 100 events/s: the fire latency p99 then, and whether the 100 ran at once.
"""
from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from bench.measure import load_note, median, percentile, venv_bin, wait_until
from bench.procs import Daemon, free_port, short_tmpdir

RULES = 1000
TARGET_RATIO = 0.90
TARGET_REACTOR_RATE = 50_000
TARGET_P99_MS = 10.0
LATENCY_RATE = 500
SLOW_RUNS = 100


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def thousand_rules() -> list[dict]:
    """1,000 rules of the three shapes the matcher knows: exact, prefix*, and patterned globs."""
    rules: list[dict] = []
    for i in range(RULES - 4):
        shape = i % 3
        glob = (f"bench/rule/{i}" if shape == 0 else f"bench/rule/{i}/*" if shape == 1
                else f"bench/r?le/{i}/x*y")
        rules.append({glob: [{"fire": {"tag": "bench/never"}}]})
    rules.append({"bench/ev/*000": [{"fire": {"tag": "bench/hit", "data": {"n": "{{ data.n }}"}}}]})
    rules.append({"bench/lat": [{"fire": {"tag": "bench/lat/done", "data": {"t": "{{ data.t }}"}}}]})
    rules.append({"bench/slow": [{"run": {"argv": ["/bin/sleep", "2"], "timeout": 30}}]})
    rules.append({"bench/fast": [{"fire": {"tag": "bench/fast/done", "data": {"t": "{{ data.t }}"}}}]})
    return rules


class Master:
    """A master on a fresh config dir (with or without the rules), ready; removed on close."""

    def __init__(self, rules: list[dict] | None) -> None:
        self.root = short_tmpdir("ebq")
        config_dir = self.root / "conf"
        config_dir.mkdir()
        keys: dict[str, Any] = {"root_dir": str(self.root), "sock_dir": "s", "log_level": "warning",
                                "event_journal": True, "publish_port": free_port(), "ret_port": free_port()}
        if rules:
            keys["reactor"] = rules
        (config_dir / "master").write_text(yaml.safe_dump(keys))
        self.config_path = config_dir / "master"
        self.sock_dir = self.root / "s"
        self.daemon = Daemon([venv_bin("eventbus"), "master", "-c", str(config_dir)], self.root / "master.log")
        self.rules = bool(rules)

    def __enter__(self) -> "Master":
        from eventbus.bus import control
        from eventbus.errors import BusUnavailableError

        def answers() -> bool:
            self.daemon.check_alive()
            try:
                control.ping(self.sock_dir, timeout=0.5)
                return True
            except BusUnavailableError:
                return False
        self.daemon.start()
        wait_until(answers, 30, "the master to answer")
        if self.rules:
            wait_until(lambda: (self.status() or {}).get("running"), 30, "the reactor to run")
        return self

    def status(self) -> dict | None:
        import json

        try:
            return json.loads((self.root / "var/cache/eventbus/master/reactor/status.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def head(self) -> int:
        from eventbus.bus import control

        return int(control.ping(self.sock_dir)["seq"])

    def handle(self, listen: bool = True) -> Any:
        from eventbus.event import MasterEvent

        return MasterEvent(self.sock_dir, opts=_opts(self.config_path), listen=listen)

    def __exit__(self, *exc_info: object) -> None:
        self.daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _opts(path: Path) -> dict:
    from eventbus import config

    return config.master_config(path)


def publisher_main(config_path: str, tag_kind: str, count: int, rate: float | None, start_at: float) -> None:
    """Fire ``count`` events (paced at ``rate``/s, or flat out), each carrying its send time."""
    from bench.measure import Pacer
    from eventbus import config
    from eventbus.event import MasterEvent

    handle = MasterEvent(opts=config.master_config(config_path), listen=False)
    handle.connect_pull(5000)
    while time.time() < start_at:
        time.sleep(0.001)
    pacer = Pacer(rate)
    pad = "x" * 40
    for n in range(count):
        pacer.wait(n)
        tag = f"bench/ev/{n}" if tag_kind == "ev" else tag_kind
        handle.fire_event({"n": n, "t": time.time(), "pad": pad}, tag, timeout=10000)
    handle.destroy()


def spawn_publisher(master: Master, tag_kind: str, count: int, rate: float | None) -> tuple[Any, float]:
    start_at = time.time() + 0.5
    proc = multiprocessing.get_context("spawn").Process(
        target=publisher_main, args=(str(master.config_path), tag_kind, count, rate, start_at))
    proc.start()
    return proc, start_at


def throughput_trial(master: Master, count: int) -> tuple[float, float | None, int]:
    """(bus delivered rate, reactor read rate or None, reactions seen) for ``count`` flat-out events."""
    listener = master.handle()
    try:
        done_before = (master.status() or {}).get("done", 0)
        proc, start_at = spawn_publisher(master, "ev", count, None)
        received = 0
        last = 0.0
        last_seq = 0
        while received < count:
            event = listener.get_event_record(wait=30, tag="bench/ev/")
            if event is None:
                raise TimeoutError(f"only {received} of {count} events arrived")
            received += 1
            last = time.time()
            last_seq = event.seq
        proc.join(30)
        bus_rate = count / (last - start_at)
        reactor_rate = None
        if master.rules:
            wait_until(lambda: (master.status() or {}).get("read", 0) >= last_seq, 120, "the reactor to catch up",
                       interval=0.005)
            reactor_rate = count / (time.time() - start_at)
            wait_until(lambda: (master.status() or {}).get("in_flight", 1) == 0, 60, "the reactions to finish")
            return bus_rate, reactor_rate, (master.status() or {})["done"] - done_before
        return bus_rate, reactor_rate, 0
    finally:
        listener.destroy()


def latency_run(master: Master, tag: str, done_tag: str, rate: float, seconds: float,
                listener: Any = None) -> list[float]:
    """Milliseconds from each ``tag`` event's send to its ``done_tag`` fire arriving."""
    own = listener is None
    listener = listener or master.handle()
    count = int(rate * seconds)
    proc, _ = spawn_publisher(master, tag, count, rate)
    delays: list[float] = []
    try:
        while len(delays) < count:
            event = listener.get_event_record(wait=30, tag=done_tag)
            if event is None:
                raise TimeoutError(f"only {len(delays)} of {count} reactions arrived")
            delays.append((time.time() - float(event.data["t"])) * 1000)
        proc.join(30)
    finally:
        if own:
            listener.destroy()
    return delays


def slow_runs(master: Master) -> tuple[list[float], int, float]:
    """Fire latency while ``SLOW_RUNS`` sleeping ``run`` actions are in flight; (delays, peak in flight, span)."""
    listener = master.handle()
    firer = master.handle(listen=False)
    try:
        listener.subscribe("eventbus/reactor/result")  # kept while the fire latency is read
        started = time.time()
        for n in range(SLOW_RUNS):
            firer.fire_event({"n": n}, "bench/slow", timeout=5000)
        peak = wait_until(lambda: (s := master.status() or {}).get("in_flight", 0) >= SLOW_RUNS and s["in_flight"],
                          10, "100 runs in flight", interval=0.02)
        delays = latency_run(master, "bench/fast", "bench/fast/done", 100, 1.2, listener)
        results = 0
        finished = 0.0
        while results < SLOW_RUNS:
            event = listener.get_event_record(wait=30, tag="eventbus/reactor/result")
            if event is None:
                raise TimeoutError("slow runs never finished")
            if event.data["action"] == "run":
                results += 1
                finished = time.time()
        return delays, int(peak), finished - started
    finally:
        listener.destroy()
        firer.destroy()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.reactor", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput trial")
    parser.add_argument("--trials", type=int, default=3, help="throughput trials per configuration")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the 500 events/s latency run")
    args = parser.parse_args(argv)

    rules = thousand_rules()
    bare: list[float] = []
    ruled: list[float] = []
    reactor_rates: list[float] = []
    reactions = 0
    with Master(None) as plain, Master(rules) as master:
        for trial in range(args.trials):
            progress(f"throughput trial {trial + 1}/{args.trials}: no rules")
            bare.append(throughput_trial(plain, args.events)[0])
            progress(f"throughput trial {trial + 1}/{args.trials}: {RULES} rules")
            bus_rate, reactor_rate, seen = throughput_trial(master, args.events)
            reactions += seen
            ruled.append(bus_rate)
            reactor_rates.append(reactor_rate or 0.0)
        lost = (master.status() or {}).get("lost", 0)
        progress(f"latency at {LATENCY_RATE} events/s for {args.seconds:g} s")
        delays = latency_run(master, "bench/lat", "bench/lat/done", LATENCY_RATE, args.seconds)
        progress(f"fire latency with {SLOW_RUNS} slow runs in flight")
        busy_delays, peak, span = slow_runs(master)
    ratio = median(ruled) / median(bare)
    reactor_rate = median(reactor_rates)
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    busy_p99 = percentile(busy_delays, 99)
    expected = args.trials * ((args.events - 1) // 1000)
    lines = [
        "## Reactor", "",
        f"`python -m bench.reactor` ({args.events} events x {args.trials} trials per configuration; "
        f"{load_note()})", "",
        "| figure | value | target | result |",
        "|---|---|---|---|",
        f"| bus throughput, no rules (median) | {median(bare):,.0f} events/s | | |",
        f"| bus throughput, {RULES} rules (median) | {median(ruled):,.0f} events/s | | |",
        f"| bus throughput with rules / without | {ratio:.1%} | >= {TARGET_RATIO:.0%} | {verdict(ratio >= TARGET_RATIO)} |",
        f"| events matched by the reactor ({RULES} rules) | {reactor_rate:,.0f} events/s | "
        f">= {TARGET_REACTOR_RATE:,} | {verdict(reactor_rate >= TARGET_REACTOR_RATE)} |",
        f"| reactions during the flat-out trials (1 event in 1,000; events lost: {lost}) | {reactions} | "
        f"{expected} | {verdict(reactions == expected and not lost)} |",
        f"| event -> fire action at {LATENCY_RATE}/s, p50 | {p50:.2f} ms | | |",
        f"| event -> fire action at {LATENCY_RATE}/s, p99 | {p99:.2f} ms | <= {TARGET_P99_MS:g} ms | "
        f"{verdict(p99 <= TARGET_P99_MS)} |",
        f"| fire action p99 with {SLOW_RUNS} `run` actions in flight | {busy_p99:.2f} ms | "
        f"<= {TARGET_P99_MS:g} ms | {verdict(busy_p99 <= TARGET_P99_MS)} |",
        f"| `run` actions in flight at once (sleep 2 s each; all done in {span:.1f} s) | {peak} | "
        f">= {SLOW_RUNS} | {verdict(peak >= SLOW_RUNS)} |",
        "",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
