"""One number kept in a small file (a cluster process's positions): read at start, rewritten in place."""
from __future__ import annotations

import os
from pathlib import Path


class SeqFile:
    """The number in ``path`` (0 when there is none yet); ``store`` writes it in place, fixed width."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.value = self.load()

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> int:
        try:
            return int(self.path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def store(self, value: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"%020d" % value, 0)
        finally:
            os.close(fd)
        self.value = value
