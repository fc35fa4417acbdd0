"""The forwarder's sink interface: what a broker (built in or a user's ``package.module.Class``) implements.

A sink gets batches of ``Outgoing`` events in bus order and returns from
``publish`` only once the broker has durably accepted every one of them; any
exception means "not delivered" and the forwarder retries the whole batch
later (with backoff), so a sink that can de-duplicate by ``seq`` should.

A sink class needs only the four ``METHODS`` (as Rasa's custom brokers;
docs/forward.md, Custom sinks); subclassing ``Sink`` gives their defaults,
``KEYS`` checking and ``options``. A class without ``KEYS`` accepts any
keys; without ``BODY`` it gets the record's ``body``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, NamedTuple

from eventbus.errors import ConfigError, SinkError

__all__ = ["COMMON_KEYS", "METHODS", "REQUIRED", "Outgoing", "Sink", "SinkError", "check_keys", "declared_keys",
           "wants_body"]

METHODS = ("from_endpoint_config", "publish", "is_ready", "close")
"""What the forwarder calls on a sink class and its instances; a class lacking one is refused at start."""
# Keys of every broker block, whatever its type (``root_dir`` is added by the forwarder).
COMMON_KEYS = ("name", "type", "tags", "format", "outbox_max_events", "source")


class Outgoing(NamedTuple):
    """One bus event on its way to a broker (immutable; a named tuple, since one is built per event)."""

    seq: int
    tag: str
    data: dict                # as the master bus carries it
    minion_id: str | None     # data["id"] for relayed events (cmd == "_minion_event"), else None
    time: str                 # RFC 3339 UTC from data["_stamp"] (or now if absent)
    body: bytes               # the JSON record in the broker's ``format`` (salt or cloudevents)


REQUIRED: Any = object()
"""A ``KEYS`` default meaning the key must be given."""


def declared_keys(sink_class: type) -> Mapping[str, Any] | None:
    """The class's ``KEYS`` (``None``, any keys, when it declares none)."""
    return getattr(sink_class, "KEYS", None)


def wants_body(sink_class: type) -> bool:
    """Whether the class's sinks read ``Outgoing.body`` (``BODY``, true when not declared)."""
    return bool(getattr(sink_class, "BODY", True))


def check_keys(keys: Mapping[str, Any], cfg: Mapping[str, Any], where: str) -> dict:
    """``cfg``'s keys with the defaults of ``keys`` filled; ``ConfigError`` naming an unknown or missing key.

    ``where`` starts the message (e.g. ``forward: broker 'db' (type sql)``); the common keys and
    ``root_dir`` pass unchecked.
    """
    for key in cfg:
        if key not in keys and key not in COMMON_KEYS and key != "root_dir":
            raise ConfigError(f"{where}: unknown key {key!r}; its keys are " + ", ".join(sorted(keys)), key=key)
    values: dict = {}
    for key, default in keys.items():
        if key in cfg and cfg[key] is not None:
            values[key] = cfg[key]
        elif default is REQUIRED:
            raise ConfigError(f"{where}: missing key {key!r}", key=key)
        else:
            values[key] = default
    for key in (*COMMON_KEYS, "root_dir"):
        if key in cfg:
            values[key] = cfg[key]
    return values


class Sink:
    """Base class of the built-in sinks, and the documented one for a custom broker type ``package.module.Class``.

    ``KEYS`` (optional) maps each key of the broker's config block to its
    default (``REQUIRED`` when it must be given); with it, unknown and missing
    keys are refused when the ``forward`` file is read, naming the broker and
    the key, and ``options`` fills the defaults. ``None`` (the default)
    accepts any keys.
    """

    KEYS: ClassVar[Mapping[str, Any] | None] = None
    BODY: ClassVar[bool] = True
    """``False`` for a sink that writes an event's fields, not its ``body``: ``body`` is then ``b""`` (not encoded)."""

    @classmethod
    def from_endpoint_config(cls, cfg: dict) -> "Sink":
        """A sink for the broker config block ``cfg`` (secrets already resolved).

        Called once at start: raise ``ConfigError`` for a bad key (it stops
        the forwarder with one line); connect lazily, in ``publish``.
        """
        return cls(cfg)  # type: ignore[call-arg]

    @classmethod
    def options(cls, cfg: dict) -> dict:
        """``cfg``'s type keys with defaults filled; ``ConfigError`` naming a missing or unknown key."""
        if cls.KEYS is None:
            return dict(cfg)
        return check_keys(cls.KEYS, cfg, f"forward: broker {cfg.get('name')!r} (type {cfg.get('type')})")

    def publish(self, batch: list[Outgoing]) -> None:
        """Deliver ``batch`` durably, in order; raise (``SinkError`` or anything) if not all are accepted."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the broker is connected and accepting (for health reports)."""
        return True

    def close(self) -> None:
        """Release connections; called once when the forwarder stops."""
