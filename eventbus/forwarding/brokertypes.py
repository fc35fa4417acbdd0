"""Broker types (docs/forward.md, Config): the built-in type names with their keys, and a user's
``package.module.Class``.

The built-in types' keys are declared here, beside the config, so a ``forward`` file is checked whole when
it is read; the sinks in ``daemon/forward/sinks`` declare these same mappings as their ``KEYS``. A custom
class is imported and checked for the four sink methods when the file is read.
"""
from __future__ import annotations

import importlib
from typing import Any, Mapping

from eventbus.errors import ConfigError
from eventbus.sink import METHODS, REQUIRED, declared_keys

__all__ = ["BUILTIN", "builtin", "custom_class", "keys_of_type"]

# Default files follow the usual layout under root_dir (with root_dir / : /var/log/eventbus, /var/lib/eventbus).
FILE_SINK_PATH = "var/log/eventbus/forwarded_events.log"
SQLITE_DB = "var/lib/eventbus/forward/events.db"

BUILTIN: dict[str, Mapping[str, Any]] = {
    "file": {"path": FILE_SINK_PATH, "max_bytes": 100 * 1024 * 1024, "backups": 5},
    "sql": {"dialect": "sqlite", "db": None, "host": None, "port": None, "username": None,
            "password": None, "url": None, "query": None},
    "webhook": {"url": REQUIRED, "secret": None, "mode": "structured", "timeout": 10, "retries": 3,
                "format": "salt"},
    "pika": {"url": "localhost", "port": 5672, "username": "guest", "password": "guest", "vhost": "/",
             "queues": [], "exchange_name": "eventbus"},
    "kafka": {"url": REQUIRED, "topic": REQUIRED, "partition_by": None, "partition_by_sender": False,
              "client_id": None, "security_protocol": "PLAINTEXT", "sasl_mechanism": None,
              "sasl_username": None, "sasl_password": None, "ssl_cafile": None, "ssl_certfile": None,
              "ssl_keyfile": None, "ssl_check_hostname": True},
    "nats": {"url": "nats://127.0.0.1:4222", "subject_prefix": "eventbus", "stream": None},
}


def builtin(kind: str) -> str | None:
    """The built-in type ``kind`` names, matched without case (``SQL`` -> ``sql``); ``None`` if none."""
    lowered = kind.lower()
    return lowered if lowered in BUILTIN else None


def custom_class(kind: str, where: str) -> type:
    """The user's class named by ``kind`` (``package.module.Class``), checked for the sink methods.

    ``ConfigError`` (one line, starting with ``where``) for an unknown type, a class that cannot be
    imported, or one lacking a method.
    """
    if "." not in kind:
        raise ConfigError(f"{where}: unknown broker type {kind!r}; expected one of "
                          f"{', '.join(BUILTIN)} or a package.module.Class", key="type", value=kind)
    module_name, _, class_name = kind.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import may fail in any way; the user needs its one line
        raise ConfigError(f"{where}: cannot import the sink class {kind!r}: {type(exc).__name__}: {exc}",
                          key="type", value=kind) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}: cannot import the sink class {kind!r}: module {module_name!r} has no "
                          f"class {class_name!r}", key="type", value=kind)
    missing = [method for method in METHODS if not callable(getattr(cls, method, None))]
    if missing:
        raise ConfigError(f"{where}: class {kind!r} is not a sink: it has no " + ", ".join(missing),
                          key="type", value=kind)
    return cls


def keys_of_type(kind: str, where: str) -> tuple[str, Mapping[str, Any] | None]:
    """``(type, keys)``: the type's name as the forwarder knows it and its keys (``None``: any keys)."""
    name = builtin(kind)
    if name is not None:
        return name, BUILTIN[name]
    return kind, declared_keys(custom_class(kind, where))
