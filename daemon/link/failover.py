"""Which master a failover minion relays to (``master_type: failover``), as a decision without sockets.

One master of the list is live at a time, starting with the first. When the
live master has been silent for 1.5 ``master_alive_interval`` (no answer to
the pings, no connection at all since it was chosen, or a ``reject`` or
``denied`` for this minion since then) the minion moves to the next one,
round the list. With ``master_failback`` the earlier masters
of the list are watched (linked, but not sent to) and the first of them to
accept the minion again becomes live.

What moving means for the events (the spool goes on from the first event the
previous master had not acknowledged) is ``MinionMasters``' and the session's
business; this only says when and where to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SILENCE = 1.5  # alive intervals of silence after which the live master is given up


@dataclass(frozen=True, slots=True)
class Move:
    """Relay to master ``to`` instead of ``away_from``; ``why`` for the log."""

    away_from: int
    to: int
    why: str


class Failover:
    """The live master's index in a list of ``count``, and when to move."""

    def __init__(self, count: int, alive_interval: float, failback: bool) -> None:
        self.count = count
        self.alive_interval = alive_interval
        self.failback = failback
        self.live = 0

    def watched(self) -> range:
        """The earlier masters linked for failback (none without it)."""
        return range(self.live) if self.failback else range(0)

    def check(self, silent_for: Callable[[int], float], accepts: Callable[[int], bool]) -> Move | None:
        """Where to move now, given each master's seconds of silence and whether it accepts this minion."""
        for earlier in self.watched():
            if accepts(earlier):
                return self._move(earlier, "it answers again (master_failback)")
        silence = silent_for(self.live)
        if self.count > 1 and silence > SILENCE * self.alive_interval:
            return self._move((self.live + 1) % self.count,
                              f"it has not answered for {silence:.1f} s (master_alive_interval "
                              f"{self.alive_interval:g} s)")
        return None

    def _move(self, to: int, why: str) -> Move:
        move = Move(self.live, to, why)
        self.live = to
        return move
