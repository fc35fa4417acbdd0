"""The forwarder's sink interface: what a broker (built in or a user's ``package.module.Class``) implements.

A sink gets batches of ``Outgoing`` events in bus order and returns from
``publish`` only once the broker has durably accepted every one of them; any
exception means "not delivered" and the forwarder retries the whole batch
later (with backoff), so a sink that can de-duplicate by ``seq`` should.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from eventbus.errors import ConfigError, SinkError

__all__ = ["REQUIRED", "Outgoing", "Sink", "SinkError"]


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


class Sink:
    """Base class of every sink; subclass it for a custom broker type ``package.module.Class``.

    ``KEYS`` (optional) maps each key of the broker's config block to its
    default (``REQUIRED`` when it must be given); with it, ``options`` rejects
    unknown and missing keys with a message naming the broker and the key.
    ``None`` (the default) accepts any keys.
    """

    KEYS: ClassVar[dict[str, Any] | None] = None
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
        common = {"name", "type", "tags", "format", "outbox_max_events", "root_dir"}
        where = f"broker {cfg.get('name')!r} (type {cfg.get('type')})"
        values: dict = {}
        for key in cfg:
            if key not in cls.KEYS and key not in common:
                raise ConfigError(f"forward: {where}: unknown key {key!r}; its keys are "
                                  + ", ".join(sorted(cls.KEYS)), key=key)
        for key, default in cls.KEYS.items():
            if key in cfg and cfg[key] is not None:
                values[key] = cfg[key]
            elif default is REQUIRED:
                raise ConfigError(f"forward: {where}: missing key {key!r}", key=key)
            else:
                values[key] = default
        for key in common:
            if key in cfg:
                values[key] = cfg[key]
        return values

    def publish(self, batch: list[Outgoing]) -> None:
        """Deliver ``batch`` durably, in order; raise (``SinkError`` or anything) if not all are accepted."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the broker is connected and accepting (for health reports)."""
        return True

    def close(self) -> None:
        """Release connections; called once when the forwarder stops."""
