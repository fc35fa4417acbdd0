"""The ``forward`` config file (SPEC 8): the forwarder's keys and its list of brokers, typed and checked.

Any key, at the top or in a broker, may be given as ``KEY_file: PATH`` (the
file's text, stripped) or ``KEY_env: VARNAME`` instead, so secrets need not
sit in the file. Broker type keys are checked later by the sink class of the
type (``eventbus.sink.Sink.options``); here only the common keys are.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from eventbus import config
from eventbus.errors import ConfigError
from eventbus.records import FORMATS

NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
# Keys whose values are secrets wherever they appear (never logged, never in events).
SECRET_KEYS = ("password", "secret", "sasl_password", "token", "api_key")
COMMON_KEYS = ("name", "type", "tags", "format", "outbox_max_events")
DEFAULT_OUTBOX_MAX = 1_000_000


@dataclass(frozen=True)
class BrokerConfig:
    """One entry of ``brokers``: the common keys typed, the type's own keys in ``options``."""

    name: str
    type: str
    tags: tuple[str, ...] = ("*",)
    format: str = "salt"
    outbox_max_events: int = DEFAULT_OUTBOX_MAX
    options: dict = field(default_factory=dict)       # every key of the block, secrets resolved
    secrets: tuple[str, ...] = ()                      # values to hide from logs and events


@dataclass(frozen=True)
class ForwardConfig(config.BaseConfig):
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


def _resolve_indirect(block: dict, label: str, where: str) -> tuple[dict, list[str]]:
    """``block`` with ``KEY_file``/``KEY_env`` replaced by ``KEY``; and the secret values in it."""
    resolved: dict[str, Any] = {}
    secrets: list[str] = []
    for key, value in block.items():
        key = str(key)
        name, indirect = key, None
        for suffix in ("_file", "_env"):
            if key.endswith(suffix) and key != suffix:
                name, indirect = key[: -len(suffix)], suffix
        if indirect is None or name == "path":
            resolved[key] = value
            if key in SECRET_KEYS and isinstance(value, str):
                secrets.append(value)
            continue
        if name in block:
            raise ConfigError(f"{label}: {where}both {name!r} and {key!r} are given; keep one", file=label, key=key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{label}: {where}key {key!r} has value {value!r}; expected "
                              f"{'a file path' if indirect == '_file' else 'an environment variable name'}",
                              file=label, key=key, value=value)
        if indirect == "_file":
            try:
                text = Path(value).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{label}: {where}key {key!r}: cannot read {value}: {exc.strerror}",
                                  file=label, key=key, value=value) from None
        else:
            if value not in os.environ:
                raise ConfigError(f"{label}: {where}key {key!r}: environment variable {value} is not set",
                                  file=label, key=key, value=value)
            text = os.environ[value]
        resolved[name] = text
        if text:
            secrets.append(text)
    return resolved, secrets


def _url_password(url: Any) -> str | None:
    if isinstance(url, str):
        found = re.search(r"://[^/@:]*:([^/@]+)@", url)
        if found:
            return found.group(1)
    return None


def _broker(raw: Any, index: int, label: str, root: Path) -> BrokerConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: brokers[{index}] has value {raw!r}; expected a mapping with name and type",
                          file=label, key="brokers")
    where = f"brokers[{index}]: "
    block, secrets = _resolve_indirect(raw, label, where)
    name = block.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{label}: {where}key 'name' has value {name!r}; expected a name of "
                          f"letters, digits, '_', '.' and '-'", file=label, key="name", value=name)
    where = f"broker {name!r}: "
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{label}: {where}missing key 'type'" if kind is None else
                          f"{label}: {where}key 'type' has value {kind!r}; expected a broker type",
                          file=label, key="type", value=kind)
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
    password = _url_password(block.get("url"))
    if password:
        secrets.append(password)
    block["root_dir"] = str(root)
    return BrokerConfig(name, kind, tuple(tags), fmt, bound, block, tuple(secrets))


def load(path: str | os.PathLike) -> ForwardConfig:
    """Read and check the ``forward`` file; ``ConfigError`` naming file, key and value."""
    source = Path(path).absolute()
    label = str(path)
    raw = config._read_yaml(source)
    raw, _ = _resolve_indirect(raw, label, "")
    brokers_raw = raw.pop("brokers", None)
    settings = config.from_mapping(ForwardConfig, raw, source, label)
    if brokers_raw is None:
        brokers_raw = []
    if not isinstance(brokers_raw, list):
        raise ConfigError(f"{label}: key 'brokers' has value {brokers_raw!r}; expected a list of brokers",
                          file=label, key="brokers", value=brokers_raw)
    brokers = tuple(_broker(b, i, label, settings.root_dir) for i, b in enumerate(brokers_raw))
    seen: set[str] = set()
    for broker in brokers:
        if broker.name in seen:
            raise ConfigError(f"{label}: two brokers are named {broker.name!r}; names must be unique",
                              file=label, key="name", value=broker.name)
        seen.add(broker.name)
    return dataclasses.replace(settings, brokers=brokers)
