"""Small JSON files the CLI writes and a running API re-reads (CloudEvents types and channels).

Written whole to a temporary file and renamed over the old one, so a reader
never sees half a file; read back as one JSON object, or ``{}`` when absent;
``Reloading`` keeps what was read and reads it again when the file changes.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from eventbus.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


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


def file_stamp(path: Path) -> tuple[int, ...]:
    """What changes whenever ``path`` is replaced or written: inode, mtime, ctime, size (``()`` when absent).

    The inode is in it because ``write_atomic`` always makes a new file: two writes of
    the same size within one tick of the file system's clock still differ.
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        return ()
    return (status.st_ino, status.st_mtime_ns, status.st_ctime_ns, status.st_size)


class Reloading(Generic[T]):
    """A value loaded from a file and loaded again when the file changes, checked at most every ``every`` s.

    Thread-safe: the first ``current()`` loads while every other thread waits for it; a
    load that fails with ``ConfigError`` (a file edited badly by hand) is logged and the
    value loaded before is kept.
    """

    def __init__(self, path: Callable[[], Path], load: Callable[[], T], empty: T, what: str,
                 every: float = 0.25) -> None:
        self._path = path
        self._load = load
        self._value = empty
        self._what = what
        self._every = every
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._checked = 0.0

    def current(self) -> T:
        if time.monotonic() - self._checked >= self._every:
            with self._lock:
                now = time.monotonic()
                if now - self._checked >= self._every:  # another thread may have just reloaded
                    stamp = file_stamp(self._path())
                    if stamp != self._stamp:
                        try:
                            self._value = self._load()
                        except ConfigError as exc:
                            log.warning("%s not reloaded: %s", self._what, exc)
                        self._stamp = stamp
                    # Set last: until the first load is done, every thread waits for it on the lock.
                    self._checked = now
        return self._value
