"""The names and keys of the fleet consumers (reactor, ``source: fleet`` brokers), without a NATS server."""
from __future__ import annotations

import re

import pytest
import yaml

from eventbus import config
from eventbus.cluster.consumer import durable_name
from eventbus.daemon.forward import fleet
from eventbus.daemon.reactor.fleet import bucket_name, entry_key
from eventbus.errors import ConfigError
from eventbus.forwarding import config as forwardconf

CONSUMER_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}\Z")
KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+\Z")


def test_a_broker_name_makes_a_valid_consumer_name_of_its_own():
    assert durable_name("forward", "db_1") == "forward_db_1"
    dotted, underscored = durable_name("forward", "a.b"), durable_name("forward", "a_b")
    assert CONSUMER_NAME.match(dotted) and dotted.startswith("forward_a_b_")
    assert dotted != underscored, "two broker names never share one consumer"
    assert durable_name("forward", "channel.x.k1") == durable_name("forward", "channel.x.k1")
    assert durable_name("reactor") == "reactor"


def test_a_reactor_ledger_key_is_a_valid_key_per_rule_seq_and_action():
    key = entry_key(("0:myco/*/[ab]?", 42, 1))
    assert KV_KEY.match(key) and key.startswith("42.") and key.endswith(".1")
    assert entry_key(("1:myco/*/[ab]?", 42, 1)) != key, "the rule's position is part of its identity"
    assert entry_key(("0:myco/*/[ab]?", 43, 1)) != key and entry_key(("0:myco/*/[ab]?", 42, 0)) != key


def test_the_ledger_bucket_is_named_after_the_stream(tmp_path):
    path = tmp_path / "master"
    path.write_text(yaml.safe_dump({"root_dir": str(tmp_path), "event_journal": True,
                                    "cluster": {"stream": "FLEET_1"}}))
    settings = config.load(config.MasterConfig, path)
    assert bucket_name(settings.cluster) == "FLEET_1_reactor"


def write_forward(tmp_path, **broker) -> forwardconf.ForwardConfig:
    path = tmp_path / "forward"
    path.write_text(yaml.safe_dump({"root_dir": str(tmp_path), "brokers": [{"name": "b", "type": "file", **broker}]}))
    return forwardconf.load(path)


def test_source_defaults_to_the_bus_and_takes_fleet(tmp_path):
    assert write_forward(tmp_path).brokers[0].source == "bus"
    broker = write_forward(tmp_path, source="fleet").brokers[0]
    assert broker.source == "fleet" and fleet.durable_name(broker) == "forward_b"


def test_source_fleet_without_cluster_is_one_line_naming_the_key(tmp_path):
    broker = write_forward(tmp_path, source="fleet").brokers[0]
    master_path = tmp_path / "master"
    master_path.write_text(yaml.safe_dump({"root_dir": str(tmp_path)}))
    master = config.load(config.MasterConfig, master_path)
    with pytest.raises(ConfigError) as caught:
        fleet.cluster_of(master, broker, "conf/forward")
    message = str(caught.value)
    assert caught.value.key == "source" and "\n" not in message
    assert message.startswith("conf/forward: broker 'b': key 'source' has value 'fleet'") and "cluster" in message
