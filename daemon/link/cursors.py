"""Each master's place in the one relay spool, and when the spool may forget an event.

A minion keeps one spool however many masters it has. Each master's session
reads it through a ``Cursor``: what that master acknowledged, and reads after
it. When the spool may drop an event depends on the mode (``master_type``):

- hot (``str``): every event goes to every master, so the spool keeps an
  event until every master has acknowledged it (the lowest cursor);
- failover: an event acknowledged by any master is delivered, so the live
  master's acknowledgement moves the spool on at once.

With one master both are the same. A master away longer than the spool holds
(``spool_max_events``) misses the oldest events, as one master always did:
the spool drops them, counts them and logs it.
"""
from __future__ import annotations

from eventbus.daemon.link.spool import Spool


class Cursors:
    """The cursors of one spool, one per master."""

    def __init__(self, spool: Spool, hot: bool) -> None:
        self.spool = spool
        self.hot = hot
        self.cursors: list[Cursor] = []

    def cursor(self) -> "Cursor":
        cursor = Cursor(self)
        self.cursors.append(cursor)
        return cursor

    def moved(self, cursor: "Cursor") -> None:
        """``cursor`` acknowledged more: free what every master that must have it has."""
        if self.hot:
            self.spool.ack(min(c.acked for c in self.cursors))
        else:
            self.spool.ack(cursor.acked)


class Cursor:
    """One master's view of the spool: the spool's reading side, with this master's own acknowledged seq."""

    def __init__(self, group: Cursors) -> None:
        self.group = group
        self.spool = group.spool
        self.acked = self.spool.head

    @property
    def head(self) -> int:
        """The newest seq this master has, or that no master will get any more (dropped, or freed)."""
        return max(self.acked, self.spool.head)

    @property
    def next_seq(self) -> int:
        return self.spool.next_seq

    @property
    def dropped(self) -> int:
        return self.spool.dropped

    def __len__(self) -> int:
        """Events this master has yet to acknowledge."""
        return self.spool.next_seq - 1 - self.head

    def ack(self, seq: int) -> None:
        """This master has everything up to ``seq``."""
        seq = min(seq, self.spool.next_seq - 1)
        if seq > self.acked:
            self.acked = seq
            self.group.moved(self)

    def read(self, after: int, limit: int, max_bytes: int = 1 << 20) -> list[tuple[int, bytes]]:
        return self.spool.read(after, limit, max_bytes)
