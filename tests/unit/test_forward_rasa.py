"""Rasa's ``event_broker`` blocks pasted as they are into a ``forward`` file (SPEC 8).

The YAML below keeps the shapes of the examples in Rasa's "Event Brokers"
documentation (endpoints.yml): the same keys and layout, Rasa's own values.
"""
from __future__ import annotations

import os
import sys

import pytest

from eventbus.daemon.forward.sinks.kafka import KafkaSettings
from eventbus.daemon.forward.sinks.rabbitmq import RabbitMQSettings
from eventbus.daemon.forward.sinks.sql import engine_url
from eventbus.forwarding import config as forwardconf
from eventbus.errors import ConfigError

PIKA = """
event_broker:
  type: pika
  url: localhost
  username: username
  password: password
  queues:
    - queue-1
  #   you may supply more than one queue to publish to
  #   - queue-2
  #   - queue-3
  exchange_name: exchange
"""
KAFKA_PARTITION_KEY = """
event_broker:
  type: kafka
  partition_by_sender: True
  security_protocol: PLAINTEXT
  topic: topic
  url: localhost
  client_id: kafka-python-rasa
"""
KAFKA_PLAINTEXT = """
event_broker:
  type: kafka
  security_protocol: PLAINTEXT # no credentials, no encryption
  topic: topic
  url: localhost
"""
KAFKA_SASL_PLAINTEXT = """
event_broker:
  type: kafka
  security_protocol: SASL_PLAINTEXT
  topic: topic
  url: localhost
  sasl_username: username
  sasl_password: password
  sasl_mechanism: PLAIN
"""
KAFKA_SSL = """
event_broker:
  type: kafka
  security_protocol: SSL
  topic: topic
  url: localhost
  ssl_cafile: CARoot.pem
  ssl_certfile: certificate.pem
  ssl_keyfile: key.pem
  ssl_check_hostname: True
"""
KAFKA_SASL_SSL = """
event_broker:
  type: kafka
  security_protocol: SASL_SSL
  topic: topic
  url: localhost
  sasl_username: username
  sasl_password: password
  sasl_mechanism: PLAIN
  ssl_cafile: CARoot.pem
  ssl_certfile: certificate.pem
  ssl_keyfile: key.pem
  ssl_check_hostname: True
"""
SQL_SQLITE = """
event_broker:
  type: SQL
  dialect: sqlite
  db: events.db
"""
SQL_POSTGRESQL = """
event_broker:
  type: SQL
  url: 127.0.0.1
  port: 5432
  dialect: postgresql
  username: myuser
  password: mypassword
  db: mydatabase
"""
FILE = """
event_broker:
  path: "rasa_event.log"
  type: file
"""
CUSTOM = """
event_broker:
  type: mypackage.MyBroker
"""


def load(tmp_path, text: str) -> forwardconf.BrokerConfig:
    path = tmp_path / "forward"
    path.write_text("root_dir: .\n" + text)
    settings = forwardconf.load(path)
    assert len(settings.brokers) == 1
    return settings.brokers[0]


@pytest.mark.parametrize("text, name, kind", [
    (PIKA, "pika", "pika"), (KAFKA_PARTITION_KEY, "kafka", "kafka"), (KAFKA_PLAINTEXT, "kafka", "kafka"),
    (KAFKA_SASL_PLAINTEXT, "kafka", "kafka"), (KAFKA_SSL, "kafka", "kafka"), (KAFKA_SASL_SSL, "kafka", "kafka"),
    (SQL_SQLITE, "sql", "sql"), (SQL_POSTGRESQL, "sql", "sql"), (FILE, "file", "file"),
])
def test_a_pasted_rasa_block_loads_as_one_broker_named_for_its_type(tmp_path, text, name, kind):
    broker = load(tmp_path, text)
    assert (broker.name, broker.type, broker.tags, broker.format) == (name, kind, ("*",), "salt")


def test_pika_block_gives_the_rabbitmq_settings(tmp_path):
    broker = load(tmp_path, PIKA)
    settings = RabbitMQSettings.from_config(broker.options)
    assert (settings.host, settings.username, settings.queues, settings.exchange_name) == \
        ("localhost", "username", ("queue-1",), "exchange")
    assert "password" in broker.secrets


def test_kafka_partition_by_sender_means_partition_by_minion_id(tmp_path):
    settings = KafkaSettings.from_config(load(tmp_path, KAFKA_PARTITION_KEY).options)
    assert settings.partition_by == "id" and settings.client_id == "kafka-python-rasa"
    plain = KafkaSettings.from_config(load(tmp_path, KAFKA_PLAINTEXT).options)
    assert plain.partition_by is None


def test_kafka_partition_by_and_partition_by_sender_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="partition_by_sender"):
        KafkaSettings.from_config(load(tmp_path, KAFKA_PARTITION_KEY + "  partition_by: tag\n").options)


@pytest.mark.parametrize("text, protocol, sasl, ssl", [
    (KAFKA_PLAINTEXT, "PLAINTEXT", False, False),
    (KAFKA_SASL_PLAINTEXT, "SASL_PLAINTEXT", True, False),
    (KAFKA_SSL, "SSL", False, True),
    (KAFKA_SASL_SSL, "SASL_SSL", True, True),
])
def test_kafka_security_variants_build_their_producer_config(tmp_path, text, protocol, sasl, ssl):
    broker = load(tmp_path, text)
    conf = KafkaSettings.from_config(broker.options).producer_config()
    assert conf["bootstrap.servers"] == "localhost" and conf["security.protocol"] == protocol
    if sasl:
        assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == \
            ("PLAIN", "username", "password")
        assert "password" in broker.secrets
    else:
        assert not any(key.startswith("sasl.") for key in conf)
    if ssl:
        root = broker.options["root_dir"]  # relative paths, like every path in a config file, are under it
        assert (conf["ssl.ca.location"], conf["ssl.certificate.location"], conf["ssl.key.location"]) == \
            tuple(os.path.join(root, name) for name in ("CARoot.pem", "certificate.pem", "key.pem"))
        assert conf["ssl.endpoint.identification.algorithm"] == "https"
    else:
        assert not any(key.startswith("ssl.") for key in conf)


def test_sql_blocks_give_their_database_urls(tmp_path):
    sqlite = engine_url(load(tmp_path, SQL_SQLITE).options)
    assert sqlite.drivername == "sqlite" and sqlite.database == str(tmp_path.resolve() / "events.db")
    broker = load(tmp_path, SQL_POSTGRESQL)
    url = engine_url(broker.options)
    assert (url.drivername, url.host, url.port, url.username, url.password, url.database) == \
        ("postgresql+psycopg", "127.0.0.1", 5432, "myuser", "mypassword", "mydatabase")
    assert "mypassword" in broker.secrets


def test_sql_query_options_reach_the_database_url(tmp_path):
    broker = load(tmp_path, SQL_POSTGRESQL + "  query:\n    options: -csearch_path=rasa\n")
    assert dict(engine_url(broker.options).query) == {"options": "-csearch_path=rasa"}


def test_a_custom_class_block_loads(tmp_path, monkeypatch):
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text(
        "class MyBroker:\n"
        "    @classmethod\n"
        "    def from_endpoint_config(cls, broker_config):\n        return cls()\n"
        "    def publish(self, event):\n        pass\n"
        "    def is_ready(self):\n        return True\n"
        "    def close(self):\n        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mypackage", raising=False)
    broker = load(tmp_path, CUSTOM)
    assert (broker.name, broker.type) == ("mypackage.mybroker", "mypackage.MyBroker")


def test_built_in_type_names_match_without_case_in_a_broker_list(tmp_path):
    path = tmp_path / "forward"
    path.write_text("brokers:\n  - {name: a, type: File}\n  - {name: b, type: WEBHOOK, url: 'http://h/'}\n")
    assert [b.type for b in forwardconf.load(path).brokers] == ["file", "webhook"]


def test_event_broker_and_brokers_together_need_distinct_names(tmp_path):
    path = tmp_path / "forward"
    path.write_text("brokers:\n  - {name: events, type: file}\n" + FILE)
    assert [b.name for b in forwardconf.load(path).brokers] == ["events", "file"]
    path.write_text("brokers:\n  - {name: file, type: sql}\n" + FILE)
    with pytest.raises(ConfigError, match="two brokers are named 'file'"):
        forwardconf.load(path)


def test_event_broker_must_be_a_mapping(tmp_path):
    path = tmp_path / "forward"
    path.write_text("event_broker: [file]\n")
    with pytest.raises(ConfigError, match="key 'event_broker' has value"):
        forwardconf.load(path)


def test_an_unknown_rasa_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="broker 'pika' \\(type pika\\): unknown key 'raise_on_failure'"):
        load(tmp_path, PIKA + "  raise_on_failure: true\n")
