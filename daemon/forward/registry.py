"""Broker type name -> sink class: the built-in types, or a user's ``package.module.Class``.

A custom class needs only the four sink methods (``eventbus.sink.METHODS``);
it is found and checked by ``eventbus.forwarding.brokertypes``, as when the ``forward``
file is read.
"""
from __future__ import annotations

import importlib

from eventbus.forwarding import brokertypes
from eventbus.errors import ConfigError

# type -> "module:Class". The broker sinks (pika, kafka, nats) come from their own modules;
# a build without one says so instead of failing obscurely.
BUILTIN = {
    "file": "eventbus.daemon.forward.sinks.file:FileSink",
    "sql": "eventbus.daemon.forward.sinks.sql:SqlSink",
    "webhook": "eventbus.daemon.forward.sinks.webhook:WebhookSink",
    "pika": "eventbus.daemon.forward.sinks.rabbitmq:RabbitMQSink",
    "kafka": "eventbus.daemon.forward.sinks.kafka:KafkaSink",
    "nats": "eventbus.daemon.forward.sinks.nats:NatsSink",
}


def sink_class(kind: str, broker: str) -> type:
    """The class for broker type ``kind`` (built-in names without case); ``ConfigError``, one line, if none."""
    builtin = brokertypes.builtin(kind)
    if builtin is None:
        return brokertypes.custom_class(kind, f"forward: broker {broker!r}")
    module_name, class_name = BUILTIN[builtin].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"forward: broker {broker!r}: unknown broker type {kind!r} "
                              f"(its sink is not part of this build)", key="type", value=kind) from None
        raise ConfigError(f"forward: broker {broker!r}: type {kind!r} needs the Python package "
                          f"{exc.name!r}, which is not installed", key="type", value=kind) from None
    return getattr(module, class_name)
