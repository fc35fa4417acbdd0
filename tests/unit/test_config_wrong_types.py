"""Every declared key given a value of the wrong type: one error line naming file, key, value and what was expected.

The keys come from the declarations (``eventbus.configkeys``, ``ForwardConfig``,
``COMMON_KEYS`` and each built-in sink's ``KEYS``), so a new key
is covered the day it is declared; a new kind of key needs a line in ``WRONG``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from eventbus import config, configdoc
from eventbus.forwarding import config as forwardconf
from eventbus.errors import ConfigError, SinkError
from eventbus.secretref import SECRET_KEYS
from eventbus.sink import COMMON_KEYS, REQUIRED

# kind of key -> (a value of the wrong type, words of the expectation the error must state)
WRONG: dict[str, tuple[Any, str]] = {
    "int": ("many", "an integer from"),
    "port": ("http", "a TCP port number"),
    "seconds": ("soon", "a positive number of seconds"),
    "bool": ("maybe", "true or false"),
    "str": (["a", "list"], "a non-empty string"),
    "secret": (1234567890, "a string of at least 16 characters"),
    "choice": (7, "one of"),
    "path": (5, "a file system path"),
    "root": (5, "a directory path"),
    "confpath": (5, "the path of a config file"),
    "id": (["a"], "an id (1 to"),
    "reactor": ("fire", "a list of"),
    "eauth": ("file", "a mapping"),
    "masters": ({"port": 1}, "a host, or a list of masters"),
    "cluster": ("nats://127.0.0.1:4222", "a mapping"),
}


def kind_of(file: str, key: str) -> str:
    return {f.name: f for f in dataclasses.fields(configdoc.FILES[file])}[key].metadata["kind"]


def load(file: str, path) -> Any:
    return forwardconf.load(path) if file == "forward" else config.load(configdoc.FILES[file], path)


@pytest.mark.parametrize("file, key", [(file, key) for file in configdoc.FILES for key in configdoc.keys_of(file)])
def test_a_wrong_type_is_one_line_naming_file_key_value_and_expectation(tmp_path, file, key):
    kind = kind_of(file, key)
    assert kind in WRONG, f"keys of kind {kind!r} have no wrong value here: add one to WRONG"
    value, expected = WRONG[kind]
    path = tmp_path / file
    path.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError) as caught:
        load(file, path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and repr(key) in message and expected in message, message
    if kind == "secret":
        assert str(value) not in message, "a secret is never echoed, not even a bad one"
    else:
        assert repr(value) in message


# The forward file's brokers: the common keys, checked by forwardconf.load.
BROKER_WRONG: dict[str, tuple[Any, str]] = {
    "name": (5, "a name of letters"),
    "type": (5, "a broker type"),
    "tags": (5, "a list of tag globs"),
    "format": (5, "one of"),
    "outbox_max_events": ("many", "an integer from"),
    "source": (5, "one of bus, fleet"),
}


def test_the_brokers_key_is_a_list(tmp_path):
    path = tmp_path / "forward"
    path.write_text(yaml.safe_dump({"brokers": "file"}))
    with pytest.raises(ConfigError, match=r"key 'brokers' has value 'file'; expected a list of brokers$"):
        forwardconf.load(path)


@pytest.mark.parametrize("key", COMMON_KEYS)
def test_a_wrong_type_for_a_common_broker_key_is_one_line(tmp_path, key):
    assert key in BROKER_WRONG, f"common broker key {key!r} has no wrong value here: add one to BROKER_WRONG"
    value, expected = BROKER_WRONG[key]
    path = tmp_path / "forward"
    path.write_text(yaml.safe_dump({"brokers": [{"name": "b", "type": "file", key: value}]}))
    with pytest.raises(ConfigError) as caught:
        forwardconf.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert repr(key) in message and repr(value) in message and expected in message, message


def type_keys() -> list[tuple[str, str]]:
    """(type, key) of each built-in sink's typed ``KEYS`` (a ``None`` default says no type to get wrong)."""
    from eventbus.daemon.forward import registry

    found = []
    for kind in registry.BUILTIN:
        keys = registry.sink_class(kind, kind).KEYS or {}
        found += [(kind, key) for key, default in keys.items()
                  if key not in COMMON_KEYS and (default is REQUIRED or isinstance(default, (str, int)))]
    return found


# Keys a sink needs to get as far as the key under test.
NEEDED = {"webhook": {"url": "http://127.0.0.1:9/hook"}, "sql": {"dialect": "postgresql"},
          "kafka": {"url": "127.0.0.1:9", "topic": "t"}}


@pytest.mark.parametrize("kind, key", type_keys())
def test_a_wrong_type_for_a_broker_type_key_stops_the_forwarder_with_one_line(tmp_path, kind, key):
    """What ``eventbus forward`` does at start: ``options`` then ``from_endpoint_config``; for a built-in sink
    a ``ConfigError`` or ``SinkError`` there stops it with one line, anything else is taken for a broker that
    is away and retried for ever."""
    from eventbus.daemon.forward import registry

    sink = registry.sink_class(kind, "b")
    default = sink.KEYS[key]
    value = 5 if default is REQUIRED or isinstance(default, str) else "maybe" if isinstance(default, bool) else "many"
    block = {"name": "b", "type": kind, "root_dir": str(tmp_path), **NEEDED.get(kind, {}), key: value}
    with pytest.raises((ConfigError, SinkError)) as caught:
        sink.options(block)
        sink.from_endpoint_config(dict(block))
    message = str(caught.value)
    assert "\n" not in message and repr(key) in message, message
    if key in SECRET_KEYS:
        assert str(value) not in message, "a secret is never echoed, not even a bad one"
    else:
        assert repr(value) in message, message
