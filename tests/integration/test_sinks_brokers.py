"""The pika, kafka and nats sinks delivering to real brokers: order, headers, keys, redelivered batches."""
from __future__ import annotations

import json

import pytest

from tests.brokers import kafka_consume, kafka_create_topic, nats_fetch, nats_stream_count, rabbit_drain
from tests.sinkkit import (events, first_occurrences, kafka, kafka_sink, nats_names, nats_sink,  # noqa: F401 - fixtures
                           rabbit_names, rabbit_sink, seqs_of)

pytestmark = pytest.mark.timeout(180)


# -- RabbitMQ -------------------------------------------------------------------

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


# -- Kafka (Tansu) --------------------------------------------------------------

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


# -- NATS JetStream -------------------------------------------------------------

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
