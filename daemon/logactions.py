"""The two actions every link state machine returns for the log: a rate-limited refusal and a plain line."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refuse:
    """Something was refused: log it (grouped by ``kind``, rate-limited)."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Note:
    """A log line at ``level``."""

    level: int
    message: str
