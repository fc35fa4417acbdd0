"""Broker type name -> sink class: the built-in types, or a user's ``package.module.Class``."""
from __future__ import annotations

import importlib

from eventbus.errors import ConfigError
from eventbus.sink import Sink

# type -> "module:Class". The broker sinks (pika, kafka, nats) come from their own modules;
# a build without one says so instead of failing obscurely.
BUILTIN = {
    "file": "daemon.forward.sinks.file:FileSink",
    "sql": "daemon.forward.sinks.sql:SqlSink",
    "webhook": "daemon.forward.sinks.webhook:WebhookSink",
    "pika": "daemon.forward.sinks.rabbitmq:RabbitMQSink",
    "kafka": "daemon.forward.sinks.kafka:KafkaSink",
    "nats": "daemon.forward.sinks.nats:NatsSink",
}


def sink_class(kind: str, broker: str) -> type[Sink]:
    """The class for broker type ``kind``; ``ConfigError`` with one line naming what is wrong."""
    if kind in BUILTIN:
        module_name, class_name = BUILTIN[kind].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                raise ConfigError(f"forward: broker {broker!r}: unknown broker type {kind!r} "
                                  f"(its sink is not part of this build)", key="type", value=kind) from None
            raise ConfigError(f"forward: broker {broker!r}: type {kind!r} needs the Python package "
                              f"{exc.name!r}, which is not installed", key="type", value=kind) from None
        return getattr(module, class_name)
    if "." not in kind:
        raise ConfigError(f"forward: broker {broker!r}: unknown broker type {kind!r}; expected one of "
                          f"{', '.join(BUILTIN)} or a package.module.Class", key="type", value=kind)
    module_name, _, class_name = kind.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import may fail in any way; the user needs its one line
        raise ConfigError(f"forward: broker {broker!r}: cannot import the sink class {kind!r}: "
                          f"{type(exc).__name__}: {exc}", key="type", value=kind) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"forward: broker {broker!r}: cannot import the sink class {kind!r}: "
                          f"module {module_name!r} has no class {class_name!r}", key="type", value=kind)
    missing = [m for m in ("from_endpoint_config", "publish", "is_ready", "close") if not hasattr(cls, m)]
    if missing:
        raise ConfigError(f"forward: broker {broker!r}: class {kind!r} is not a sink: it has no "
                          + ", ".join(missing), key="type", value=kind)
    return cls
