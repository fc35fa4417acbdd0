"""The broker sinks' keys (SPEC 8's table) as typed settings: defaults, client options, errors naming the key."""
from __future__ import annotations

import pytest

from eventbus.daemon.forward.sinks.kafka import DELIVERY_TIMEOUT, KafkaSettings
from eventbus.daemon.forward.sinks.nats import NatsSettings, subject_for
from eventbus.daemon.forward.sinks.rabbitmq import RabbitMQSettings
from eventbus.errors import ConfigError


def test_kafka_producer_is_idempotent_acks_all_and_bounded() -> None:
    conf = KafkaSettings.from_config({"name": "k", "url": ["h1:9092", "h2:9092"], "topic": "t"}).producer_config()
    assert conf["bootstrap.servers"] == "h1:9092,h2:9092"
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["message.timeout.ms"] == DELIVERY_TIMEOUT * 1000 <= 15000
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in conf)


def test_kafka_sasl_and_ssl_keys_pass_through_under_librdkafka_names() -> None:
    conf = KafkaSettings.from_config({
        "url": "broker:9093", "topic": "t", "client_id": "fwd", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u", "sasl_password": "p",
        "ssl_cafile": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
        "ssl_check_hostname": False}).producer_config()
    assert conf["client.id"] == "fwd"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == ("SCRAM-SHA-512", "u", "p")
    assert (conf["ssl.ca.location"], conf["ssl.certificate.location"], conf["ssl.key.location"]) == \
        ("/ca.pem", "/c.pem", "/k.pem")
    assert conf["ssl.endpoint.identification.algorithm"] == "none"


@pytest.mark.parametrize("cfg, key", [
    ({"url": "h:1"}, "topic"),
    ({"topic": "t"}, "url"),
    ({"url": "h:1", "topic": "t", "partition_by": "minion"}, "partition_by"),
    ({"url": "h:1", "topic": "t", "security_protocol": "TLS"}, "security_protocol"),
])
def test_kafka_bad_or_missing_key_is_named(cfg, key) -> None:
    with pytest.raises(ConfigError) as error:
        KafkaSettings.from_config({"name": "k", **cfg})
    assert error.value.key == key and repr(key) in str(error.value) and "'k'" in str(error.value)


def test_kafka_partition_by_none_spelled_as_text() -> None:
    assert KafkaSettings.from_config({"url": "h:1", "topic": "t", "partition_by": "none"}).partition_by is None


def test_rabbitmq_defaults_follow_spec() -> None:
    settings = RabbitMQSettings.from_config({"url": "mq.example"})
    assert (settings.port, settings.vhost, settings.exchange_name, settings.queues) == (5672, "/", "eventbus", ())
    assert settings.where() == "RabbitMQ at mq.example:5672 vhost '/'"


def test_rabbitmq_content_type_follows_the_record_format() -> None:
    assert RabbitMQSettings.from_config({"url": "h"}).content_type == "application/json"
    assert RabbitMQSettings.from_config({"url": "h", "format": "cloudevents"}).content_type == \
        "application/cloudevents+json"


def test_rabbitmq_amqp_url_and_a_bad_password_never_show_the_secret() -> None:
    settings = RabbitMQSettings.from_config({"url": "amqp://mq:5673/prod", "username": "u", "password": "s3cr3t"})
    assert "s3cr3t" not in settings.where() and "5673" in settings.where()
    with pytest.raises(ConfigError) as error:
        RabbitMQSettings.from_config({"url": "h", "password": 12345678})
    assert "12345678" not in str(error.value) and "'password'" in str(error.value)


def test_rabbitmq_bad_port_is_named() -> None:
    with pytest.raises(ConfigError, match="'port' has value 70000"):
        RabbitMQSettings.from_config({"url": "h", "port": 70000})


def test_nats_subject_is_prefix_and_tag_with_dots() -> None:
    assert subject_for("eventbus", "salt/job/20260101/ret/web1") == "eventbus.salt.job.20260101.ret.web1"
    settings = NatsSettings.from_config({})
    assert (settings.url, settings.subject_prefix, settings.stream) == ("nats://127.0.0.1:4222", "eventbus", None)
    assert NatsSettings.from_config({"url": "nats://u:pw@h:4222"}).where() == "NATS at nats://h:4222"
