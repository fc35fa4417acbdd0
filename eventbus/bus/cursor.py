"""A durable position on the master bus: the seq of the last event a reader has fully handled.

Readers that must neither miss nor repeat (the reactor, your own scripts; a forwarder keeps its place in its outbox) keep one
per consumer and resume with ``handle.follow(cursor.load() or head)``. The
file is replaced atomically (write, fsync, rename, fsync the directory), so a
crash leaves either the old or the new position, never a torn one.
"""
from __future__ import annotations

import os
from pathlib import Path

from eventbus.errors import CursorError


class Cursor:
    """One reader's position, stored as a decimal seq in ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.seq: int | None = None

    def load(self) -> int | None:
        """The saved seq, or ``None`` when the reader has never saved one."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CursorError(f"cannot read cursor {self.path}: {exc}", path=str(self.path)) from None
        if not text.isdigit():
            raise CursorError(f"cursor {self.path} holds {text[:40]!r}, not a seq", path=str(self.path))
        self.seq = int(text)
        return self.seq

    def save(self, seq: int) -> None:
        """Make ``seq`` the saved position, durably."""
        directory = self.path.parent
        temporary = directory / f".{self.path.name}.tmp"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"%d\n" % seq)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise CursorError(f"cannot save cursor {self.path}: {exc}", path=str(self.path)) from None
        self.seq = seq
