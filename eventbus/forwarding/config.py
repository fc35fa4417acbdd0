"""The ``forward`` config file (docs/forward.md, Config): the forwarder's keys and its brokers, typed and checked.

Brokers come as a ``brokers`` list and/or Rasa's ``event_broker`` mapping. A block's known keys (for its
``NAME_file``/``NAME_env`` references, ``eventbus.secretref``) include its type's ``KEYS``, so a broker's type
is found (and a custom class imported) before its block is resolved and checked.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from eventbus.forwarding import brokertypes
from eventbus import config, secretref
from eventbus.errors import ConfigError
from eventbus.forwarding.formats import FORMATS
from eventbus.sink import COMMON_KEYS, check_keys

NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
DEFAULT_OUTBOX_MAX = 1_000_000
RASA_KEY = "event_broker"
# Where a broker's events come from: the master bus, or the fleet stream of the master's ``cluster``.
SOURCES = ("bus", "fleet")


@dataclass(frozen=True)
class BrokerConfig:
    """One entry of ``brokers``: the common keys typed, the type's own keys in ``options``."""

    name: str
    type: str
    tags: tuple[str, ...] = ("*",)
    format: str = "salt"
    outbox_max_events: int = DEFAULT_OUTBOX_MAX
    source: str = "bus"                                # bus: the master bus; fleet: the fleet stream
    options: dict = field(default_factory=dict)       # every key of the block, secrets resolved
    secrets: tuple[str, ...] = ()                      # values to hide from logs and events


@dataclass(frozen=True)
class ForwardConfig(config.CommonConfig):
    """The forwarder's config (file ``forward``)."""

    node: ClassVar[str] = "forward"
    master_config: Path = config._key("master", "confpath")
    brokers: tuple[BrokerConfig, ...] = field(default=(), metadata={"kind": "internal"})

    @property
    def state_dir(self) -> Path:
        """Where the outboxes (one per broker, with its cursor) live."""
        return self.root_dir / "var/cache/eventbus/forward"

    @property
    def sock_dir(self) -> Path:
        """Where the running forwarder's control socket and lock live."""
        return self.root_dir / "var/run/eventbus/forward"


def _url_password(url: Any) -> str | None:
    if isinstance(url, str):
        found = re.search(r"://[^/@:]*:([^/@]+)@", url)
        if found:
            return found.group(1)
    return None


def _broker(raw: Any, where: str, label: str, root: Path) -> BrokerConfig:
    """One broker block (``where``: ``brokers[3]: `` or ``event_broker: ``), resolved and checked."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: {where.removesuffix(': ')} has value {raw!r}; expected a mapping with "
                          f"name and type",
                          file=label, key="brokers")
    given_name = raw.get("name")
    if isinstance(given_name, str) and given_name:
        where = f"broker {given_name!r}: "
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{label}: {where}missing key 'type'" if kind is None else
                          f"{label}: {where}key 'type' has value {kind!r}; expected a broker type",
                          file=label, key="type", value=kind)
    kind, type_keys = brokertypes.keys_of_type(kind, f"{label}: {where.removesuffix(': ')}")
    block, secrets = secretref.resolve(raw, {*COMMON_KEYS, *(type_keys or ())}, label, where)
    block["type"] = kind
    name = block.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{label}: {where}key 'name' has value {name!r}; expected a name of "
                          f"letters, digits, '_', '.' and '-'", file=label, key="name", value=name)
    where = f"broker {name!r}: "
    tags = block.get("tags", ["*"])
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
        raise ConfigError(f"{label}: {where}key 'tags' has value {tags!r}; expected a list of tag globs",
                          file=label, key="tags", value=tags)
    fmt = block.get("format", "salt")
    if fmt not in FORMATS:
        raise ConfigError(f"{label}: {where}key 'format' has value {fmt!r}; expected one of "
                          + ", ".join(FORMATS), file=label, key="format", value=fmt)
    bound = block.get("outbox_max_events", DEFAULT_OUTBOX_MAX)
    if isinstance(bound, bool) or not isinstance(bound, int) or not 1 <= bound <= 1_000_000_000:
        raise ConfigError(f"{label}: {where}key 'outbox_max_events' has value {bound!r}; expected an "
                          f"integer from 1 to 1000000000", file=label, key="outbox_max_events", value=bound)
    source = block.get("source", "bus")
    if source not in SOURCES:
        raise ConfigError(f"{label}: {where}key 'source' has value {source!r}; expected one of "
                          + ", ".join(SOURCES), file=label, key="source", value=source)
    if type_keys is not None:
        try:
            check_keys(type_keys, block, f"{label}: broker {name!r} (type {kind})")
        except ConfigError as exc:
            raise ConfigError(str(exc), file=label, key=exc.key) from None
    password = _url_password(block.get("url"))
    if password:
        secrets.append(password)
    block["root_dir"] = str(root)
    return BrokerConfig(name, kind, tuple(tags), fmt, bound, source, block, tuple(secrets))


def _rasa_broker(raw: Any, label: str) -> Any:
    """Rasa's ``event_broker`` mapping as a broker block: its ``name`` defaults to its type, lower-cased."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: key {RASA_KEY!r} has value {raw!r}; expected a mapping with a type "
                          f"(Rasa's endpoints.yml form)", file=label, key=RASA_KEY, value=raw)
    if "name" not in raw and isinstance(raw.get("type"), str):
        return {"name": raw["type"].lower(), **raw}
    return raw


def load(path: str | os.PathLike) -> ForwardConfig:
    """Read and check the ``forward`` file; ``ConfigError`` naming file, key and value."""
    source = Path(path).absolute()
    label = str(path)
    raw = config._read_yaml(source)
    known = {spec.name for spec in dataclasses.fields(ForwardConfig)} | {RASA_KEY}
    raw, _ = secretref.resolve(raw, known, label)
    brokers_raw = raw.pop("brokers", None)
    rasa_raw = raw.pop(RASA_KEY, None)
    settings = config.from_mapping(ForwardConfig, raw, source, label)
    if brokers_raw is None:
        brokers_raw = []
    if not isinstance(brokers_raw, list):
        raise ConfigError(f"{label}: key 'brokers' has value {brokers_raw!r}; expected a list of brokers",
                          file=label, key="brokers", value=brokers_raw)
    blocks = [(f"brokers[{i}]: ", b) for i, b in enumerate(brokers_raw)]
    if rasa_raw is not None:
        blocks.append((f"{RASA_KEY}: ", _rasa_broker(rasa_raw, label)))
    brokers = tuple(_broker(b, where, label, settings.root_dir) for where, b in blocks)
    seen: set[str] = set()
    for broker in brokers:
        if broker.name in seen:
            raise ConfigError(f"{label}: two brokers are named {broker.name!r}; names must be unique",
                              file=label, key="name", value=broker.name)
        seen.add(broker.name)
    return dataclasses.replace(settings, brokers=brokers)
