"""The pika, kafka and nats sinks against real brokers, read back with each broker's own client.

Outages go through a TcpProxy the test cuts (the shared RabbitMQ and NATS
keep running for everyone else); Kafka is a Tansu process per test.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Iterator

import pytest

from eventbus.daemon.forward.sinks.kafka import KafkaSink
from eventbus.daemon.forward.sinks.nats import NatsSink
from eventbus.daemon.forward.sinks.rabbitmq import RabbitMQSink
from eventbus.sink import Outgoing, Sink, SinkError
from tests.brokers import (NATS_START, RABBITMQ_START, Tansu, ensure_service, kafka_consume, kafka_create_topic,
                           nats_delete_stream, nats_fetch, nats_stream_count, rabbit_delete, rabbit_drain)
from tests.helpers import short_tmpdir
from bench.tcpproxy import TcpProxy

OUTAGE_BOUND = 15.0  # seconds within which publish must give up on a dead broker

pytestmark = pytest.mark.timeout(180)


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


# -- RabbitMQ -------------------------------------------------------------------

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


def test_pika_every_queue_gets_each_batch_in_order_persistent_with_seq_header(rabbit_names) -> None:
    exchange, queues = rabbit_names
    sink = rabbit_sink(exchange, queues)
    try:
        sent = events(1, 300, minions=(None, "web1"))
        for start in range(0, 300, 100):
            sink.publish(sent[start:start + 100])
        assert sink.is_ready()
    finally:
        sink.close()
    for queue in queues:
        got = rabbit_drain(queue, 300)
        assert [m.body for m in got] == [e.body for e in sent], f"queue {queue} differs"
        assert [m.headers["seq"] for m in got] == list(range(1, 301))
        assert all(m.persistent and m.content_type == "application/json" for m in got)
    # Durable exchange and queues: redeclaring them transient is refused by the broker.
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            connection.channel().queue_declare(queues[0], durable=False)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            connection.channel().exchange_declare(exchange, "fanout", durable=False)
    finally:
        connection.close()


def test_pika_outage_fails_fast_then_resumes_in_order(rabbit_names) -> None:
    exchange, queues = rabbit_names
    proxy = TcpProxy(5672).start()
    sink = rabbit_sink(exchange, queues[:1], port=proxy.port)
    try:
        sink.publish(events(1, 100))
        proxy.cut()
        took, message = timed_failure(sink, events(101, 100))
        assert took < OUTAGE_BOUND
        assert "RabbitMQ at 127.0.0.1" in message
        assert not sink.is_ready()
        took, _ = timed_failure(sink, events(101, 100))  # still down: fails again, as fast
        assert took < OUTAGE_BOUND
        proxy.restore()
        publish_until_ok(sink, events(101, 100))
        sink.publish(events(201, 100))
        assert sink.is_ready()
    finally:
        sink.close()
        proxy.cut()
    got = seqs_of([m.body for m in rabbit_drain(queues[0], 300, timeout=10)])
    # RabbitMQ cannot de-duplicate: a batch cut mid-way may arrive twice, never out of order.
    assert first_occurrences(got) == list(range(1, 301))


def test_pika_wrong_password_names_the_refusal_never_the_password(rabbit_names, caplog) -> None:
    exchange, queues = rabbit_names
    caplog.set_level(logging.DEBUG)
    secret = f"not-the-password-{uuid.uuid4().hex}"
    sink = rabbit_sink(exchange, queues, password=secret)
    try:
        took, message = timed_failure(sink, events(1, 10))
        assert took < OUTAGE_BOUND
        assert "ACCESS_REFUSED" in message
        assert secret not in message
        assert secret not in caplog.text
        assert not sink.is_ready()
    finally:
        sink.close()


# -- Kafka (Tansu) --------------------------------------------------------------

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


@pytest.mark.parametrize("partition_by", ["id", "tag", None])
def test_kafka_batches_arrive_in_order_keyed_per_partition_by(kafka, partition_by) -> None:
    broker, _ = kafka
    topic = f"events-{partition_by}"
    sent = events(1, 600, minions=(None, "web1", "db2"))
    sink = kafka_sink(broker, topic, partition_by)
    try:
        sink.publish(sent[:500])
        sink.publish(sent[500:])
        assert sink.is_ready()
    finally:
        sink.close()
    got = kafka_consume(broker.bootstrap, topic, 600)
    assert sorted(seqs_of([m.body for m in got])) == list(range(1, 601))
    by_seq = {e.seq: e for e in sent}
    for message in got:
        event = by_seq[json.loads(message.body)["seq"]]
        assert message.body == event.body
        assert message.headers == {"seq": str(event.seq)}
        expected_key = {"id": event.minion_id, "tag": event.tag, None: None}[partition_by]
        assert message.key == (expected_key.encode() if expected_key else None)
    # Order holds within each key (a key maps to one partition); keyless messages spread over
    # the topic's partitions, so only a one-partition topic orders them.
    for key in {m.key for m in got} - {None}:
        keyed = seqs_of([m.body for m in got if m.key == key])
        assert keyed == sorted(keyed)


def test_kafka_redelivered_batch_is_seen_twice_by_seq(kafka) -> None:
    """Idempotence covers the producer's own retries; a batch the forwarder publishes again is written
    again, and a consumer sees each of its seqs twice (same body, same ``seq`` header)."""
    broker, _ = kafka
    kafka_create_topic(broker.bootstrap, "again")
    sink = kafka_sink(broker, "again", None)
    batch = events(1, 50)
    try:
        sink.publish(batch)
        sink.publish(batch)
    finally:
        sink.close()
    got = kafka_consume(broker.bootstrap, "again", 100)
    assert seqs_of([m.body for m in got]) == list(range(1, 51)) * 2
    assert first_occurrences(seqs_of([m.body for m in got])) == list(range(1, 51))


def test_kafka_outage_fails_within_bound_then_resumes_in_order(kafka) -> None:
    broker, proxy = kafka
    kafka_create_topic(broker.bootstrap, "outage")
    sink = kafka_sink(broker, "outage", None)
    try:
        sink.publish(events(1, 100))
        proxy.cut()
        took, message = timed_failure(sink, events(101, 100))
        assert took < OUTAGE_BOUND, f"publish blocked {took:.1f} s on a dead broker"
        assert "Kafka at" in message and "not delivered" in message
        assert not sink.is_ready()
        proxy.restore()
        publish_until_ok(sink, events(101, 100))
        sink.publish(events(201, 100))
        assert sink.is_ready()
    finally:
        sink.close()
    got = seqs_of([m.body for m in kafka_consume(broker.bootstrap, "outage", 300, timeout=30)])
    # Nothing of the failed batch slipped out behind its retry: bus order holds for a consumer.
    assert first_occurrences(got) == list(range(1, 301))


# -- NATS JetStream -------------------------------------------------------------

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


def test_nats_creates_the_stream_and_stores_each_event_on_its_subject(nats_names) -> None:
    stream, prefix = nats_names
    sent = events(1, 600, minions=(None, "web1"))
    sink = nats_sink(stream, prefix)
    try:
        sink.publish(sent[:500])
        sink.publish(sent[500:])
        assert sink.is_ready()
    finally:
        sink.close()
    got = nats_fetch(stream, f"{prefix}.>", 600)
    assert [m.body for m in got] == [e.body for e in sent]
    assert [m.headers["Nats-Msg-Id"] for m in got] == [str(e.seq) for e in sent]
    assert [m.subject for m in got] == [f"{prefix}." + e.tag.replace("/", ".") for e in sent]


def test_nats_redelivered_batch_is_stored_once(nats_names) -> None:
    stream, prefix = nats_names
    sink = nats_sink(stream, prefix)
    try:
        sink.publish(events(1, 200))
        sink.publish(events(101, 200))  # half of it again, as a retry after a lost ack would
    finally:
        sink.close()
    assert nats_stream_count(stream) == 300
    assert seqs_of([m.body for m in nats_fetch(stream, f"{prefix}.>", 300)]) == list(range(1, 301))


def test_nats_outage_fails_within_bound_then_resumes_without_duplicates(nats_names) -> None:
    stream, prefix = nats_names
    proxy = TcpProxy(4222).start()
    sink = nats_sink(stream, prefix, port=proxy.port)
    try:
        sink.publish(events(1, 100))
        proxy.cut()
        took, message = timed_failure(sink, events(101, 100))
        assert took < OUTAGE_BOUND
        assert "NATS at nats://127.0.0.1" in message
        assert not sink.is_ready()
        proxy.restore()
        publish_until_ok(sink, events(101, 100))
        sink.publish(events(201, 100))
        assert sink.is_ready()
    finally:
        sink.close()
        proxy.cut()
    assert nats_stream_count(stream) == 300
    assert seqs_of([m.body for m in nats_fetch(stream, f"{prefix}.>", 300)]) == list(range(1, 301))


def test_nats_without_a_stream_says_none_captures_the_subjects() -> None:
    prefix = f"ebnostream{uuid.uuid4().hex[:8]}"
    sink = NatsSink({"name": "nats", "type": "nats", "subject_prefix": prefix})
    try:
        took, message = timed_failure(sink, events(1, 5))
    finally:
        sink.close()
    assert took < OUTAGE_BOUND
    assert f"no JetStream stream captures subjects {prefix}.>" in message


# -- A hung broker: connections stay open, nothing answers (Rasa #8943) ---------

def stalled_then_recovered(sink: Sink, proxy: TcpProxy) -> None:
    """Publish, stall the route, check publish gives up in bounded time, then cut, restore and resume."""
    sink.publish(events(1, 100))
    proxy.stall()
    took, _ = timed_failure(sink, events(101, 100))
    assert took < OUTAGE_BOUND, f"publish blocked {took:.1f} s on a hung broker"
    proxy.cut()
    proxy.restore()
    publish_until_ok(sink, events(101, 100))
    sink.publish(events(201, 100))


def test_pika_hung_broker_fails_within_bound(rabbit_names) -> None:
    exchange, queues = rabbit_names
    proxy = TcpProxy(5672).start()
    sink = rabbit_sink(exchange, queues[:1], port=proxy.port)
    try:
        stalled_then_recovered(sink, proxy)
    finally:
        sink.close()
        proxy.cut()
    got = seqs_of([m.body for m in rabbit_drain(queues[0], 300, timeout=10)])
    assert first_occurrences(got) == list(range(1, 301))


def test_kafka_hung_broker_fails_within_bound(kafka) -> None:
    broker, proxy = kafka
    kafka_create_topic(broker.bootstrap, "hung")
    sink = kafka_sink(broker, "hung", None)
    try:
        stalled_then_recovered(sink, proxy)
    finally:
        sink.close()
    got = seqs_of([m.body for m in kafka_consume(broker.bootstrap, "hung", 300, timeout=30)])
    assert first_occurrences(got) == list(range(1, 301))


def test_nats_hung_broker_fails_within_bound(nats_names) -> None:
    stream, prefix = nats_names
    proxy = TcpProxy(4222).start()
    sink = nats_sink(stream, prefix, port=proxy.port)
    try:
        stalled_then_recovered(sink, proxy)
    finally:
        sink.close()
        proxy.cut()
    assert seqs_of([m.body for m in nats_fetch(stream, f"{prefix}.>", 300)]) == list(range(1, 301))


# -- Stopping while the broker is away, and a broker that refuses our declarations --

def test_each_sink_closes_promptly_while_its_broker_is_unreachable(rabbit_names, nats_names, kafka) -> None:
    """``eventbus forward`` must stop cleanly during an outage: close() on a connection the broker no
    longer answers (and after a failed batch) never waits on the broker for long."""
    exchange, queues = rabbit_names
    stream, prefix = nats_names
    broker, kafka_proxy = kafka
    rabbit_proxy, nats_proxy = TcpProxy(5672).start(), TcpProxy(4222).start()
    sinks = {"pika": (rabbit_sink(exchange, queues, port=rabbit_proxy.port), rabbit_proxy),
             "kafka": (kafka_sink(broker, "closing", None), kafka_proxy),
             "nats": (nats_sink(stream, prefix, port=nats_proxy.port), nats_proxy)}
    for name, (sink, proxy) in sinks.items():
        sink.publish(events(1, 10))
        proxy.stall()
        started = time.monotonic()
        sink.close()
        assert time.monotonic() - started < 6, f"{name} sink took too long to close a hung connection"
        proxy.cut()
        with pytest.raises(SinkError):
            sink.publish(events(11, 10))
        started = time.monotonic()
        sink.close()
        assert time.monotonic() - started < 6, f"{name} sink took too long to close after a failure"


def test_pika_queue_declared_otherwise_is_refused_by_name(rabbit_names) -> None:
    exchange, queues = rabbit_names
    import pika

    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    connection.channel().queue_declare(queues[0], durable=False)
    connection.close()
    sink = rabbit_sink(exchange, queues[:1])
    try:
        took, message = timed_failure(sink, events(1, 5))
    finally:
        sink.close()
    assert took < OUTAGE_BOUND
    assert "PRECONDITION_FAILED" in message and queues[0] in message
