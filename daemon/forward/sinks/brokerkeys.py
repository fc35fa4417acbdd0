"""Reading one broker entry's type keys (docs/forward.md, Config) into typed values, with errors naming the key.

Secrets arrive already resolved; these helpers never put a value of a secret key in a message.
"""
from __future__ import annotations

import os
from typing import Any

from eventbus.errors import ConfigError


def broker_name(cfg: dict) -> str:
    """The entry's ``name``, or its type when the caller passed none (tests, custom use)."""
    return str(cfg.get("name") or cfg.get("type") or "broker")


def text(cfg: dict, key: str, default: str | None = None, *, required: bool = False,
         secret: bool = False) -> str | None:
    """A string key; ``required`` ones must be present and non-empty."""
    value = cfg.get(key, default)
    if value is None:
        if required:
            raise ConfigError(f"broker {broker_name(cfg)!r}: key {key!r} is required", key=key)
        return None
    if not isinstance(value, str) or (required and not value):
        shown = "<secret>" if secret else repr(value)
        raise ConfigError(f"broker {broker_name(cfg)!r}: key {key!r} has value {shown}, expected a "
                          f"{'non-empty ' if required else ''}string", key=key,
                          value=None if secret else value)
    return value


def integer(cfg: dict, key: str, default: int, *, low: int = 1, high: int = 65535) -> int:
    """An integer key within ``[low, high]`` (a port by default)."""
    value: Any = cfg.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"broker {broker_name(cfg)!r}: key {key!r} has value {value!r}, expected an "
                          f"integer from {low} to {high}", key=key, value=value)
    return value


def flag(cfg: dict, key: str, default: bool) -> bool:
    """A boolean key."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"broker {broker_name(cfg)!r}: key {key!r} has value {value!r}, expected "
                          "true or false", key=key, value=value)
    return value


def text_list(cfg: dict, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A list of non-empty strings (a single string counts as a list of one)."""
    value = cfg.get(key, list(default))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"broker {broker_name(cfg)!r}: key {key!r} has value {value!r}, expected a "
                          "list of non-empty strings", key=key, value=value)
    return tuple(value)


def choice(cfg: dict, key: str, default: str | None, allowed: tuple[str | None, ...]) -> str | None:
    """A key whose value is one of ``allowed``."""
    value = cfg.get(key, default)
    if value not in allowed:
        names = ", ".join("none" if a is None else a for a in allowed)
        raise ConfigError(f"broker {broker_name(cfg)!r}: key {key!r} has value {value!r}, expected one "
                          f"of {names}", key=key, value=value)
    return value


def path(cfg: dict, key: str, default: str | None = None, *, required: bool = False) -> str | None:
    """A file path key: ``~`` expanded, a relative one under the config's ``root_dir`` (as every path is)."""
    value = text(cfg, key, default, required=required)
    if not value:
        return value
    found = os.path.expanduser(value)
    return found if os.path.isabs(found) else os.path.join(cfg.get("root_dir") or ".", found)
