"""``eventbus forward`` started once with a ``pika``, a ``nats`` and two ``kafka`` brokers, every key of the three
types set to a non-default value this machine's brokers take, each seen to take effect with the broker's own client
(pika, nats-py, confluent-kafka) or, for Kafka's SASL and TLS keys, in the producer configuration (``SECURITY_KEYS``).

test_every_key_forward.py starts the other types and imports ``COVERED``;
``test_every_key_of_the_broker_types_has_a_case`` fails for a key of ``eventbus.forwarding.brokertypes.BUILTIN`` with no value
here, and the daemon test ends with ``Checked.done()``, which fails for a key it set but did not check.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pika.exceptions
import pytest
from confluent_kafka import Producer

from bench.tcpproxy import TcpProxy
from eventbus.daemon.forward import registry
from eventbus.bus import control, wire
from eventbus import event
from eventbus.forwarding import config as forwardconf
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.sink import COMMON_KEYS
from tests.brokers import (RABBITMQ_START, TANSU_REQUEST_LOG, Received, Tansu, ensure_service, kafka_consume,
                           nats_fetch, nats_stream_info, rabbit_connection, rabbit_drain, rabbit_vhost, rabbitmqctl,
                           tansu_client_ids)
from tests.helpers import Daemon, short_tmpdir, wait_for, write_config
from tests.integration.test_every_key import logged, self_signed
from tests.integration.test_sinks_brokers import nats_names  # noqa: F401 - the fixture: a stream and prefix per run
from tests.linkkit import Site

COVERED = ("pika", "nats", "kafka")
"""The broker types whose every key this file sets (test_every_key_forward.py starts the others)."""

# Where the proxies to RabbitMQ and NATS listen. Both brokers listen on 127.0.0.1 only and the proxies on this
# address only, so a forwarder that reaches a proxy used the host and port it was given, not a default.
OTHER_LOOPBACK = "127.0.0.2"
MINION = "ebkeys-minion"
MASTER_EVENTS = MINION_EVENTS = 4
TOTAL = MASTER_EVENTS + MINION_EVENTS

# Kafka over SASL and TLS needs a broker with both, which this machine lacks: its Kafka is Tansu 0.6, whose CLI
# refuses --cert together with --key, and whose --authentication needs SCRAM users stored before it starts, which
# its in-memory storage cannot hold. These keys are checked in the librdkafka configuration the kafka sink builds
# from the loaded file (and librdkafka must accept it).
SECURITY_KEYS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile",
                 "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


@dataclass(frozen=True)
class Names:
    """One run's names on the shared brokers, and the ports the forwarder reaches them on."""

    rabbit_port: int
    vhost: str
    user: str
    password: str
    queues: tuple[str, str]
    exchange: str
    nats_port: int
    prefix: str
    stream: str
    bootstrap: str

    @property
    def login(self) -> dict[str, str]:
        return {"vhost": self.vhost, "username": self.user, "password": self.password}


def broker_blocks(names: Names) -> dict[str, list[dict]]:
    """Each type started here: its blocks, together every key of the type but ``SECURITY_KEYS``.
    ``partition_by_sender`` excludes ``partition_by``, so Kafka has two brokers."""
    tags = ["keys/*"]  # the test's own events only (not the minion's start, presence...)
    return {
        "pika": [{"name": "rabbit", "type": "pika", "url": OTHER_LOOPBACK, "port": names.rabbit_port,
                  "username": names.user, "password": names.password, "vhost": names.vhost,
                  "queues": list(names.queues), "exchange_name": names.exchange, "tags": tags}],
        "nats": [{"name": "jet", "type": "nats", "url": f"nats://{OTHER_LOOPBACK}:{names.nats_port}",
                  "subject_prefix": names.prefix, "stream": names.stream, "tags": tags}],
        "kafka": [{"name": "bytag", "type": "kafka", "url": [names.bootstrap], "topic": "ebkeys-by-tag",
                   "partition_by": "tag", "client_id": "ebkeys-by-tag", "tags": tags},
                  {"name": "bysender", "type": "kafka", "url": names.bootstrap, "topic": "ebkeys-by-sender",
                   "partition_by_sender": True, "client_id": "ebkeys-by-sender", "tags": tags}],
    }


def secure_block(tls: Path) -> dict:
    """A kafka broker with every one of ``SECURITY_KEYS`` set (TLS files under ``tls``)."""
    return {"name": "secure", "type": "kafka", "url": "127.0.0.1:9", "topic": "ebkeys-secure",
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "ebkeys",
            "sasl_password": "ebkeys-sasl-secret", "ssl_cafile": str(tls / "ca.pem"),
            "ssl_certfile": str(tls / "client.pem"), "ssl_keyfile": str(tls / "client.key"),
            "ssl_check_hostname": False}


SAMPLE = Names(1, "v", "u", "p", ("a", "b"), "x", 2, "pre", "S", "127.0.0.1:3")


def test_every_key_of_the_broker_types_has_a_case():
    blocks = broker_blocks(SAMPLE)
    assert set(blocks) == set(COVERED)
    for kind, made in blocks.items():
        declared = BUILTIN[kind]
        given = {key for block in made for key in block} - set(COMMON_KEYS)
        config_only = set(SECURITY_KEYS) if kind == "kafka" else set()
        assert given | config_only == set(declared), f"type {kind}: {sorted(set(declared) ^ (given | config_only))}"
        assert not [(block["name"], key) for block in made for key, value in block.items()
                    if key in declared and value == declared[key]], f"type {kind}: a default value"
    secure = secure_block(Path("/tls"))
    assert not [key for key in SECURITY_KEYS if secure[key] == BUILTIN["kafka"][key]], "a default value"


class Checked:
    """The type keys whose effect the test saw; ``done`` fails naming each key it set but did not check."""

    def __init__(self, blocks: dict[str, list[dict]]) -> None:
        self.given = {kind: {key for block in made for key in block} - set(COMMON_KEYS)
                      for kind, made in blocks.items()}
        self.keys: dict[str, set[str]] = {kind: set() for kind in blocks}

    def __call__(self, kind: str, *keys: str) -> None:
        assert set(keys) <= self.given[kind], f"{set(keys) - self.given[kind]} are not set for type {kind}"
        self.keys[kind].update(keys)

    def done(self) -> None:
        assert self.keys == self.given, {kind: sorted(self.given[kind] - self.keys[kind]) for kind in self.given}


@dataclass
class Rabbit:
    """The run's vhost, its user, the names the forwarder is to make there, and the proxy it goes through."""

    vhost: str
    user: str
    password: str
    queues: tuple[str, str]
    exchange: str
    proxy: TcpProxy


@pytest.fixture
def rabbit() -> Iterator[Rabbit]:
    """A vhost and a user allowed only there (deleted after, with the queues and exchange the forwarder makes),
    and a proxy to RabbitMQ on ``OTHER_LOOPBACK``."""
    ensure_service("RabbitMQ", 5672, RABBITMQ_START)
    suffix = uuid.uuid4().hex[:8]
    made = Rabbit(f"ebkeys-{suffix}", f"ebkeys-{suffix}", f"pw-{uuid.uuid4().hex}",
                  (f"ebkeys-a-{suffix}", f"ebkeys-b-{suffix}"), f"ebkeys-x-{suffix}",
                  TcpProxy(5672, host=OTHER_LOOPBACK))
    with rabbit_vhost(made.vhost, made.user, made.password), made.proxy:
        yield made


@pytest.fixture
def nats_proxy(nats_names) -> Iterator[TcpProxy]:  # noqa: F811 - the imported fixture
    with TcpProxy(4222, host=OTHER_LOOPBACK) as proxy:
        yield proxy


@pytest.fixture
def tansu(monkeypatch) -> Iterator[Tansu]:
    """A fresh Kafka (its topics go with it) that logs each request's client id: test_sinks_brokers' ``kafka``
    without its proxy (nothing here cuts the route), with the request log."""
    monkeypatch.setenv("RUST_LOG", TANSU_REQUEST_LOG)
    directory = short_tmpdir("ebkt")
    broker = Tansu(directory / "tansu.log").start()
    yield broker
    broker.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[Site]:
    made = Site()
    yield made
    made.cleanup()


def tag_of(message: Received) -> str:
    return json.loads(message.body)["tag"]


def tags_of(got: list[Received]) -> list[str]:
    return sorted(tag_of(m) for m in got)


EXPECTED_TAGS = sorted(["keys/master"] * MASTER_EVENTS + ["keys/minion"] * MINION_EVENTS)


def test_forward_with_every_broker_key_set(rabbit, nats_names, nats_proxy, tansu, site):  # noqa: F811
    stream, prefix = nats_names
    names = Names(rabbit.proxy.port, rabbit.vhost, rabbit.user, rabbit.password, rabbit.queues, rabbit.exchange,
                  nats_proxy.port, prefix, stream, tansu.bootstrap)
    blocks = broker_blocks(names)
    checked = Checked(blocks)
    master, minion = site.linked(MINION)
    root = short_tmpdir("ebkb")
    fwd_conf = root / "fwdconf"
    home = fwd_conf / "root"
    fwd_log = home / "logs/forward.log"
    write_config(fwd_conf, "forward", root_dir="root", master_config=str(master.path), log_file="logs/forward.log",
                 log_level="info", brokers=[block for made in blocks.values() for block in made])
    forward = Daemon.eventbus("forward", fwd_conf).start()
    try:
        wait_for(lambda: forward.check_alive() or logged(fwd_log, "eventbus forward ready"), 30,
                 what="the forwarder to be ready")
        with event.get_event("master", opts=master.opts(), listen=False) as bus:
            for n in range(MASTER_EVENTS):
                assert bus.fire_event({"n": n}, "keys/master", timeout=3000)
        with event.MinionEvent(opts=minion.opts(), listen=False) as relay:
            for n in range(MINION_EVENTS):
                assert relay.fire_master({"n": n}, "keys/minion", timeout=3000) is True

        def delivered() -> dict[str, int]:
            answer = control.request(home / "var/run/eventbus/forward", wire.VERB_STATS, timeout=5)
            return {b["name"]: b["delivered"] for b in answer["brokers"]}
        wait_for(lambda: set(delivered().values()) == {TOTAL}, 60, interval=0.2,
                 what=f"every broker to deliver {TOTAL} events")

        # pika: both queues hold every event, in the run's vhost, read as the run's user (allowed nowhere else:
        # guest, the default user, may not enter that vhost; a wrong password is refused).
        for queue in rabbit.queues:
            got = rabbit_drain(queue, TOTAL, timeout=10, **names.login)
            assert tags_of(got) == EXPECTED_TAGS, f"queue {queue}"
        connections = rabbitmqctl("list_connections", "user", "vhost").splitlines()
        assert f"{rabbit.user}\t{rabbit.vhost}" in connections, connections
        checked("pika", "queues", "vhost", "username", "password")
        assert rabbit.proxy.connections >= 1, "the forwarder came through 127.0.0.2:port"
        checked("pika", "url", "port")
        connection = rabbit_connection(**names.login)
        try:
            connection.channel().exchange_declare(rabbit.exchange, passive=True)
            with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
                connection.channel().exchange_declare(BUILTIN["pika"]["exchange_name"], passive=True)
        finally:
            connection.close()
        checked("pika", "exchange_name")
        assert rabbit.password not in fwd_log.read_text() + forward.log, "a password in the log"

        # nats: the run's stream, made over the run's prefix, holds every event on its subject.
        info = nats_stream_info(stream)
        assert info.config.subjects == [f"{prefix}.>"] and info.state.messages == TOTAL
        checked("nats", "stream")
        subjects = sorted(m.subject for m in nats_fetch(stream, f"{prefix}.>", TOTAL, timeout=10))
        assert subjects == sorted([f"{prefix}.keys.master"] * MASTER_EVENTS + [f"{prefix}.keys.minion"] * MINION_EVENTS)
        checked("nats", "subject_prefix")
        assert nats_proxy.connections >= 1, "the forwarder came through nats://127.0.0.2:port"
        checked("nats", "url")

        # kafka: each topic holds every event, keyed by the tag or by the relaying minion (none: the master's).
        by_tag = kafka_consume(tansu.bootstrap, "ebkeys-by-tag", TOTAL, timeout=15)
        assert tags_of(by_tag) == EXPECTED_TAGS
        assert all(m.key == tag_of(m).encode() for m in by_tag), [m.key for m in by_tag]
        checked("kafka", "url", "topic", "partition_by")
        by_sender = kafka_consume(tansu.bootstrap, "ebkeys-by-sender", TOTAL, timeout=15)
        assert tags_of(by_sender) == EXPECTED_TAGS
        assert {(tag_of(m), m.key) for m in by_sender} == {("keys/master", None), ("keys/minion", MINION.encode())}
        checked("kafka", "partition_by_sender")
        # The client id travels in every request's header; the broker's request log shows it.
        assert {"ebkeys-by-tag", "ebkeys-by-sender"} <= tansu_client_ids(tansu.log_path)
        checked("kafka", "client_id")
        checked.done()
    except BaseException:
        print(f"--- forward log_file (end) ---\n{fwd_log.read_text()[-4000:] if fwd_log.exists() else ''}")
        print(f"--- forward stderr ---\n{forward.log[-3000:]}")
        raise
    finally:
        forward.stop()
        shutil.rmtree(root, ignore_errors=True)


# The README: every relative path in a config file is under root_dir, the kafka sink's TLS files too.
@pytest.mark.parametrize("relative", [False, True],
                         ids=["absolute-paths", "relative-paths"])
def test_kafka_security_keys_reach_the_producer_configuration(relative):
    root = short_tmpdir("ebks")
    fwd_conf = root / "fwdconf"
    tls = fwd_conf / "root/tls"  # under the root_dir below
    try:
        self_signed(tls / "ca.pem", tls / "ca.key", "127.0.0.1")
        self_signed(tls / "client.pem", tls / "client.key", "127.0.0.1")
        path = write_config(fwd_conf, "forward", root_dir="root", master_config="../conf/master",
                            brokers=[secure_block(Path("tls") if relative else tls)])
        broker = forwardconf.load(path).brokers[0]
        # As the forwarder makes its sink: the class for the type, given the loaded block.
        sink = registry.sink_class(broker.type, broker.name).from_endpoint_config(dict(broker.options))
        conf = sink.settings.producer_config()
        assert {key: conf.get(key) for key in (
            "security.protocol", "sasl.mechanism", "sasl.username", "sasl.password", "ssl.ca.location",
            "ssl.certificate.location", "ssl.key.location", "ssl.endpoint.identification.algorithm")} == {
            "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "ebkeys",
            "sasl.password": "ebkeys-sasl-secret", "ssl.ca.location": str(tls / "ca.pem"),
            "ssl.certificate.location": str(tls / "client.pem"), "ssl.key.location": str(tls / "client.key"),
            "ssl.endpoint.identification.algorithm": "none"}
        # librdkafka takes the whole configuration: it loads the TLS files and knows the mechanism.
        Producer(conf).flush(0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
