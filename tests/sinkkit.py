"""Sink test kit: event batches, a sink per broker type, a name per test on the shared brokers, a Kafka per test.

The fixtures are imported by the test modules that use them. Kafka is a Tansu
process per test reached through a TcpProxy the test can cut.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

import pytest

from eventbus.daemon.forward.sinks.kafka import KafkaSink
from eventbus.daemon.forward.sinks.nats import NatsSink
from eventbus.daemon.forward.sinks.rabbitmq import RabbitMQSink
from eventbus.sink import Outgoing, Sink, SinkError
from tests.brokers import NATS_START, RABBITMQ_START, Tansu, ensure_service, nats_delete_stream, rabbit_delete
from tests.helpers import short_tmpdir
from bench.tcpproxy import TcpProxy


def events(first: int, count: int, minions: tuple[str | None, ...] = (None,)) -> list[Outgoing]:
    """``count`` events from seq ``first`` on, cycling through minion ids (None = the master's own)."""
    batch = []
    for seq in range(first, first + count):
        minion = minions[seq % len(minions)]
        tag = f"salt/job/{seq}/ret/{minion}" if minion else f"eventbus/test/{seq % 3}"
        data = {"_stamp": "2026-11-26T01:00:00.000000", "n": seq, "pad": "x" * 200}
        if minion:
            data["id"] = minion
        body = json.dumps({"seq": seq, "tag": tag, "data": data}, separators=(",", ":")).encode()
        batch.append(Outgoing(seq=seq, tag=tag, data=data, minion_id=minion,
                              time="2026-11-26T01:00:00Z", body=body))
    return batch


def seqs_of(bodies: list[bytes]) -> list[int]:
    return [json.loads(body)["seq"] for body in bodies]


def first_occurrences(seqs: list[int]) -> list[int]:
    """The order a consumer that drops repeated seqs sees."""
    seen: set[int] = set()
    return [s for s in seqs if not (s in seen or seen.add(s))]


def publish_until_ok(sink: Sink, batch: list[Outgoing], timeout: float = 60.0) -> int:
    """What the forwarder does after an outage: retry the same batch until the broker takes it."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        try:
            sink.publish(batch)
            return tries
        except SinkError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def timed_failure(sink: Sink, batch: list[Outgoing]) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(SinkError) as failure:
        sink.publish(batch)
    return time.monotonic() - started, str(failure.value)


@pytest.fixture
def rabbit_names() -> Iterator[tuple[str, list[str]]]:
    ensure_service("RabbitMQ", 5672, RABBITMQ_START)
    suffix = uuid.uuid4().hex[:8]
    exchange, queues = f"ebtest-x-{suffix}", [f"ebtest-a-{suffix}", f"ebtest-b-{suffix}"]
    yield exchange, queues
    rabbit_delete(exchange, queues)


def rabbit_sink(exchange: str, queues: list[str], port: int = 5672, password: str = "guest") -> RabbitMQSink:
    return RabbitMQSink({"name": "rabbit", "type": "pika", "url": "127.0.0.1", "port": port,
                         "username": "guest", "password": password, "queues": queues,
                         "exchange_name": exchange})


@pytest.fixture
def kafka() -> Iterator[tuple[Tansu, TcpProxy]]:
    """A fresh Tansu reached only through a proxy (it advertises the proxy's port to clients)."""
    directory = short_tmpdir("ebk")
    proxy = TcpProxy(0)
    broker = Tansu(directory / "tansu.log", advertised_port=proxy.port)
    proxy.target = ("127.0.0.1", broker.port)
    broker.start()
    proxy.start()
    yield broker, proxy
    proxy.cut()
    broker.stop()


def kafka_sink(broker: Tansu, topic: str, partition_by: str | None) -> KafkaSink:
    return KafkaSink({"name": "kafka", "type": "kafka", "url": broker.bootstrap, "topic": topic,
                      "partition_by": partition_by, "client_id": "eventbus-test"})


@pytest.fixture
def nats_names() -> Iterator[tuple[str, str]]:
    ensure_service("NATS", 4222, NATS_START)
    suffix = uuid.uuid4().hex[:8]
    stream, prefix = f"EBTEST_{suffix}", f"ebtest{suffix}"
    yield stream, prefix
    nats_delete_stream(stream)


def nats_sink(stream: str, prefix: str, port: int = 4222) -> NatsSink:
    return NatsSink({"name": "nats", "type": "nats", "url": f"nats://127.0.0.1:{port}",
                     "subject_prefix": prefix, "stream": stream})
