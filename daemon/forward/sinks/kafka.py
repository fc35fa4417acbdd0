"""The ``kafka`` sink: an idempotent confluent-kafka producer (``acks=all``), one flush per batch.

``publish`` produces the batch and flushes; it returns only when every
message has a successful delivery report. Every wait is bounded:
``message.timeout.ms`` is shorter than the flush deadline, so a dead broker
fails the batch with ``SinkError`` after ``DELIVERY_TIMEOUT`` instead of
blocking for minutes (Rasa #8943), and no message of a failed batch is left
queued to slip out later behind the retry. The idempotent producer removes
the duplicates its own internal retries would make; a batch the forwarder
publishes again after a failure is written again (consumers see the same
``seq`` twice and may drop it by the ``seq`` header or the record's field).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer

from eventbus.daemon.forward.sinks import brokerkeys
from eventbus.forwarding.brokertypes import BUILTIN
from eventbus.errors import ConfigError
from eventbus.sink import Outgoing, Sink, SinkError

DEFAULTS = BUILTIN["kafka"]

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT = 10.0  # seconds a message may wait for its acknowledgement (message.timeout.ms)
FLUSH_SLACK = 3.0        # extra seconds for the delivery reports of timed-out messages

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")


@dataclass(frozen=True)
class KafkaSettings:
    """The ``kafka`` type keys (docs/forward.md, Config), with Rasa's names."""

    name: str
    bootstrap_servers: str
    topic: str
    partition_by: str | None
    client_id: str | None
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None
    ssl_cafile: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_check_hostname: bool

    @classmethod
    def from_config(cls, cfg: dict) -> "KafkaSettings":
        servers = brokerkeys.text_list(cfg, "url")
        if not servers:
            brokerkeys.text(cfg, "url", required=True)
        partition_by = _partition_by(cfg)
        return cls(name=brokerkeys.broker_name(cfg),
                   bootstrap_servers=",".join(servers),
                   topic=brokerkeys.text(cfg, "topic", required=True) or "",
                   partition_by=brokerkeys.choice({**cfg, "partition_by": partition_by}, "partition_by", None,
                                            ("id", "tag", None)),
                   client_id=brokerkeys.text(cfg, "client_id"),
                   security_protocol=brokerkeys.choice(cfg, "security_protocol", DEFAULTS["security_protocol"],
                                                 PROTOCOLS) or DEFAULTS["security_protocol"],
                   sasl_mechanism=brokerkeys.text(cfg, "sasl_mechanism"),
                   sasl_username=brokerkeys.text(cfg, "sasl_username"),
                   sasl_password=brokerkeys.text(cfg, "sasl_password", secret=True),
                   ssl_cafile=brokerkeys.path(cfg, "ssl_cafile"),
                   ssl_certfile=brokerkeys.path(cfg, "ssl_certfile"),
                   ssl_keyfile=brokerkeys.path(cfg, "ssl_keyfile"),
                   ssl_check_hostname=brokerkeys.flag(cfg, "ssl_check_hostname", DEFAULTS["ssl_check_hostname"]))

    def producer_config(self) -> dict:
        """The librdkafka configuration: idempotence, ``acks=all``, bounded delivery, SASL/SSL passed through."""
        conf: dict = {
            "bootstrap.servers": self.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(DELIVERY_TIMEOUT * 1000),
            "socket.connection.setup.timeout.ms": int(DELIVERY_TIMEOUT * 1000),
            "linger.ms": 5,
            # Back at work soon after an outage: librdkafka's default waits up to 10 s between tries.
            "reconnect.backoff.max.ms": 2000,
            "security.protocol": self.security_protocol,
        }
        if self.client_id:
            conf["client.id"] = self.client_id
        if self.security_protocol.startswith("SASL_"):
            conf["sasl.mechanism"] = self.sasl_mechanism or "PLAIN"
            if self.sasl_username is not None:
                conf["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                conf["sasl.password"] = self.sasl_password
        if self.security_protocol.endswith("SSL"):
            for key, value in (("ssl.ca.location", self.ssl_cafile),
                               ("ssl.certificate.location", self.ssl_certfile),
                               ("ssl.key.location", self.ssl_keyfile)):
                if value:
                    conf[key] = value
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
        return conf

    def where(self) -> str:
        return f"Kafka at {self.bootstrap_servers} topic {self.topic!r}"


def _partition_by(cfg: dict) -> str | None:
    """``partition_by``, or Rasa's ``partition_by_sender: true`` (the sender of a bus event is its minion)."""
    partition_by = cfg.get("partition_by")
    if isinstance(partition_by, str) and partition_by.lower() in ("none", ""):
        partition_by = None
    if cfg.get("partition_by_sender") is None:
        return partition_by
    by_sender = brokerkeys.flag(cfg, "partition_by_sender", DEFAULTS["partition_by_sender"])
    if partition_by is not None:
        raise ConfigError(f"broker {brokerkeys.broker_name(cfg)!r}: keys 'partition_by' and 'partition_by_sender' "
                          "are both given; keep one", key="partition_by_sender")
    return "id" if by_sender else None


class _LibrdkafkaLog:
    """librdkafka's log lines at debug: a broker outage would repeat them every second, and
    ``error_cb`` already keeps the reason for the ``SinkError`` (and so the ``down`` event)."""

    def log(self, level: int, message: str, *args: object) -> None:
        log.debug(message, *args)


class KafkaSink(Sink):
    """``type: kafka``: value = the JSON record, key per ``partition_by``, header ``seq``."""

    KEYS = DEFAULTS

    def __init__(self, cfg: dict) -> None:
        self.settings = KafkaSettings.from_config(cfg)
        self._producer: Producer | None = None
        self._ready = False
        self._last_error: str | None = None

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka's own view of the cluster (all brokers down, auth failed...): kept for messages.
        self._last_error = error.str()
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION) or error.fatal():
            self._ready = False

    def _client(self) -> Producer:
        if self._producer is None:
            conf = self.settings.producer_config()
            conf["error_cb"] = self._on_error
            conf["logger"] = _LibrdkafkaLog()
            try:
                self._producer = Producer(conf)
            except KafkaException as exc:
                raise SinkError(f"{self.settings.where()}: cannot create the producer: "
                                f"{exc.args[0].str() if exc.args else exc}") from None
        return self._producer

    def _key(self, item: Outgoing) -> str | None:
        if self.settings.partition_by == "id":
            return item.minion_id
        if self.settings.partition_by == "tag":
            return item.tag
        return None

    def publish(self, batch: list[Outgoing]) -> None:
        if not batch:
            return
        producer = self._client()
        failures: list[KafkaError] = []

        def report(error: KafkaError | None, _message: object) -> None:
            if error is not None:
                failures.append(error)

        topic = self.settings.topic
        key = self._key if self.settings.partition_by else None
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        for item in batch:
            while True:
                try:
                    producer.produce(topic, item.body, key(item) if key else None,
                                     headers=[("seq", str(item.seq))], on_delivery=report)
                    break
                except BufferError:
                    # The local queue is full: let librdkafka drain it, within the same bound.
                    if time.monotonic() > deadline:
                        self._abandon(producer)
                        raise SinkError(f"{self.settings.where()}: the producer queue stayed full for "
                                        f"{DELIVERY_TIMEOUT:.0f} s") from None
                    producer.poll(0.05)
                except KafkaException as exc:
                    self._abandon(producer)
                    raise SinkError(f"{self.settings.where()}: {exc.args[0].str() if exc.args else exc}") from None
        left = producer.flush(DELIVERY_TIMEOUT + FLUSH_SLACK)
        if left:
            self._abandon(producer)
            raise SinkError(f"{self.settings.where()}: {left} of {len(batch)} messages not acknowledged "
                            f"within {DELIVERY_TIMEOUT + FLUSH_SLACK:.0f} s")
        if failures:
            # A new producer (new producer id) after a failed batch: after timed-out messages the
            # old one must bump its epoch, which a broker may answer by fencing it for good.
            self._abandon(producer)
            first = failures[0]
            reason = first.str()
            if first.code() == KafkaError._MSG_TIMED_OUT and self._last_error:
                reason = f"{reason} ({self._last_error})"
            raise SinkError(f"{self.settings.where()}: {len(failures)} of {len(batch)} messages not "
                            f"delivered: {reason}")
        self._ready = True

    def _abandon(self, producer: Producer) -> None:
        """Drop the producer of a failed batch, purging what it still holds so nothing of the batch is
        sent behind the retry; the next ``publish`` starts a new one."""
        self._ready = False
        producer.purge()
        producer.poll(0)
        self._producer = None

    def is_ready(self) -> bool:
        return self._ready

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(FLUSH_SLACK)
            self._producer = None
