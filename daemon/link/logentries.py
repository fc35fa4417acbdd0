"""The two actions every link state machine returns for the log: a rate-limited refusal and a plain line."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refuse:
    """Something was refused: log it (grouped by ``kind`` and ``who``, rate-limited)."""

    kind: str
    message: str
    who: str = ""  # the accepted minion it is about, so one minion's misbehaviour never hides another's


@dataclass(frozen=True, slots=True)
class Note:
    """A log line at ``level``."""

    level: int
    message: str
