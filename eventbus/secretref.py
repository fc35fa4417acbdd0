"""Secret references in a config block: ``NAME_file: PATH`` and ``NAME_env: VAR`` stand for ``NAME``.

A key that is itself a known key of the block keeps its own meaning; values read this way, and values of
keys named like secrets, are returned as secrets so logs and events can hide them. Any config file may pass
its blocks through ``resolve`` with their known keys. The rule: docs/forward.md, Config (Secrets by reference).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection, Mapping

from eventbus.errors import ConfigError

__all__ = ["SECRET_KEYS", "SUFFIXES", "resolve"]

# Keys whose values are secrets wherever they appear (never logged, never in events).
SECRET_KEYS = frozenset({"password", "secret", "sasl_password", "token", "api_key"})
SUFFIXES = ("_file", "_env")


def _reference(key: str, known: Collection[str]) -> tuple[str, str] | None:
    """``(NAME, suffix)`` when ``key`` stands for another key; ``None`` when it is a key of its own."""
    if key in known:
        return None
    for suffix in SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix
    return None


def _read(key: str, value: Any, suffix: str, label: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        expected = "a file path" if suffix == "_file" else "an environment variable name"
        raise ConfigError(f"{label}: {where}key {key!r} has value {value!r}; expected {expected}",
                          file=label, key=key, value=value)
    if suffix == "_file":
        try:
            return Path(value).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{label}: {where}key {key!r}: cannot read {value}: {exc.strerror}",
                              file=label, key=key, value=value) from None
        except RuntimeError:  # pathlib: ~user of no such user
            raise ConfigError(f"{label}: {where}key {key!r}: cannot read {value}: no such user",
                              file=label, key=key, value=value) from None
    if value not in os.environ:
        raise ConfigError(f"{label}: {where}key {key!r}: environment variable {value} is not set",
                          file=label, key=key, value=value)
    return os.environ[value]


def resolve(block: Mapping[Any, Any], known: Collection[str], label: str,
            where: str = "") -> tuple[dict[str, Any], list[str]]:
    """``block`` with every secret reference replaced by the key it stands for, and the secret values in it.

    ``known``: the block's own keys (those never taken for a reference);
    ``label`` and ``where`` (e.g. ``"broker 'db': "``) start every error message.
    """
    resolved: dict[str, Any] = {}
    given_as: dict[str, str] = {}  # NAME -> the key it was given by
    secrets: list[str] = []
    for raw_key, value in block.items():
        key = str(raw_key)
        reference = _reference(key, known)
        name = key if reference is None else reference[0]
        if name in given_as:
            raise ConfigError(f"{label}: {where}both {given_as[name]!r} and {key!r} are given; keep one",
                              file=label, key=key)
        given_as[name] = key
        if reference is None:
            resolved[key] = value
            if key in SECRET_KEYS and isinstance(value, str) and value:
                secrets.append(value)
            continue
        text = _read(key, value, reference[1], label, where)
        resolved[name] = text
        if text:
            secrets.append(text)
    return resolved, secrets
