"""Small JSON files the CLI writes and a running API re-reads (CloudEvents types and channels).

Written whole to a temporary file and renamed over the old one, so a reader
never sees half a file; read back as one JSON object, or ``{}`` when absent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eventbus.errors import ConfigError


def read_object(path: Path) -> dict:
    """The JSON object in ``path`` (``{}`` when absent); ``ConfigError`` naming the file when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}", file=str(path)) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object", file=str(path))
    return value


def write_atomic(path: Path, value: Any, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Replace ``path`` with ``value`` as JSON in one rename; the file gets ``mode`` (``0o600`` for secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(value, indent=1, sort_keys=True))
    os.replace(temp, path)
