"""The newest relay seq the master accepted from each minion, on disk, so a master restart re-accepts nothing."""
from __future__ import annotations

import os
from pathlib import Path


class RelaySeqs:
    """One small file per minion id under ``directory``, holding the seq as 20 digits."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load(self, minion_id: str) -> int:
        """The newest seq accepted from ``minion_id``; 0 when none was."""
        try:
            return int((self.directory / minion_id).read_bytes() or b"0")
        except (FileNotFoundError, ValueError):
            return 0

    def store(self, minion_id: str, seq: int) -> None:
        """Remember ``seq`` as the newest accepted from ``minion_id`` (once per batch, not per event)."""
        fd = os.open(self.directory / minion_id, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"%020d" % seq, 0)
        finally:
            os.close(fd)
