"""The pika, kafka and nats sinks when a real broker fails them: outages and hangs via a cut TcpProxy, refusals."""
from __future__ import annotations

import logging
import time
import uuid

import pytest

from eventbus.daemon.forward.sinks.nats import NatsSink
from eventbus.sink import Sink, SinkError
from tests.brokers import kafka_consume, kafka_create_topic, nats_fetch, nats_stream_count, rabbit_drain
from tests.sinkkit import (events, first_occurrences, kafka, kafka_sink, nats_names, nats_sink,  # noqa: F401 - fixtures
                           publish_until_ok, rabbit_names, rabbit_sink, seqs_of, timed_failure)
from bench.tcpproxy import TcpProxy

OUTAGE_BOUND = 15.0  # seconds within which publish must give up on a dead broker

pytestmark = pytest.mark.timeout(180)


# -- RabbitMQ -------------------------------------------------------------------

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
