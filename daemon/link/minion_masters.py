"""A minion's masters as one machine without sockets: the spool they share, a session each, which is live.

``eventbus.daemon.link.minion`` owns the sockets (one ``MasterConnection`` per
master); it hands what happens to a master's ``MinionSession`` (in
``sessions``) or to this class, and carries out the actions returned, each
addressed to a master's index (``None``: the minion's own log).

- Relayed events are checked once (``eventbus.daemon.link.intake``) and
  spooled once; every master reads the spool through its own cursor
  (``eventbus.daemon.link.cursors``).
- Hot (``master_type: str``, the default): every master is linked and gets
  every event; each one's ``salt/auth``, start event, presence and
  de-duplication are its own.
- Failover: one master is live (``eventbus.daemon.link.failover`` says which);
  moving on closes the old link and sends the new master the spool from the
  first event the old one had not acknowledged. With ``master_failback`` the
  earlier masters are linked but not sent to, until one accepts again.

A single master is the hot case with one item: as before several masters existed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from eventbus.daemon.link import intake
from eventbus.daemon.link import minion_session as ms
from eventbus.daemon.link.cursors import Cursors
from eventbus.daemon.link.failover import Failover
from eventbus.daemon.link.logentries import Note, Refuse
from eventbus.daemon.link.spool import Spool
from eventbus.config import MinionConfig


@dataclass(frozen=True, slots=True)
class Close:
    """Close every socket of this master (a failover minion moved away from it)."""


Addressed = tuple["int | None", Any]  # (master index or None, action)


class MinionMasters:
    """Every master of one minion, and the relay spool they share."""

    def __init__(self, settings: MinionConfig, spool: Spool, public_key: bytes, master_keys: list[str | None],
                 pinned_at: list[str], now: float) -> None:
        self.settings = settings
        self.spool = spool
        addresses = settings.masters
        self.hot = settings.master_type == "str" or len(addresses) == 1
        self.cursors = Cursors(spool, self.hot)
        # A failover minion pings twice per alive interval, so one lost answer is no silence yet.
        heartbeat = (settings.heartbeat_interval if self.hot
                     else min(settings.heartbeat_interval, settings.alive_interval / 2))
        self.sessions = [ms.MinionSession(settings, self.cursors.cursor(), public_key, key, now, address=address,
                                          pinned_at=where, heartbeat=heartbeat)
                         for address, key, where in zip(addresses, master_keys, pinned_at)]
        self.failover = None if self.hot else Failover(len(addresses), settings.alive_interval,
                                                       settings.master_failback)

    # -- which masters are linked -----------------------------------------------------------

    @property
    def live(self) -> int:
        """The failover minion's live master (the first, for a hot one)."""
        return self.failover.live if self.failover is not None else 0

    def linked(self) -> list[int]:
        """The masters that have sockets: all when hot; the live one and those watched for failback."""
        if self.failover is None:
            return list(range(len(self.sessions)))
        return sorted({self.failover.live, *self.failover.watched()})

    def start(self, now: float) -> list[Addressed]:
        out: list[Addressed] = []
        for index in self.linked():
            session = self.sessions[index]
            session.relaying = index == self.live or self.failover is None
            out += _to(index, session.start(now))
        return out

    def tick(self, now: float) -> list[Addressed]:
        """Each linked session's heartbeat."""
        out: list[Addressed] = []
        for index in self.linked():
            out += _to(index, self.sessions[index].tick(now))
        return out

    def check(self, now: float) -> list[Addressed]:
        """Failover: move to another master when the live one is silent, or an earlier one is back."""
        if self.failover is None:
            return []
        sessions = self.sessions
        move = self.failover.check(lambda i: sessions[i].silent_for(now),
                                   lambda i: sessions[i].state is ms.LinkState.ACCEPT)
        if move is None:
            return []
        left = sessions[move.away_from]
        why = move.why
        if left.refused_since is not None and move.to != move.away_from and left.state is not ms.LinkState.ACCEPT:
            why = f"it has answered {left.state.value!r} to this minion for {now - left.refused_since:.1f} s"
        out: list[Addressed] = [(None, Note(logging.WARNING, f"moving from the master at {left.address.name} to "
                                                             f"the master at {sessions[move.to].address.name}: {why}"))]
        wanted = self.linked()
        for index, session in enumerate(sessions):
            # The master moved away from is linked afresh if watched: only a new welcome brings it back.
            if (index not in wanted or index == move.away_from) and (session.linked or index == move.away_from):
                session.close()
                out.append((index, Close()))
        for index in wanted:
            session = sessions[index]
            session.relaying = index == self.live
            if index == move.to:
                session.live_since = now  # its silence counts from now
            if not session.linked:
                out += _to(index, session.start(now))
            elif session.relaying:
                out.append((index, ms.Pump()))
        return out

    # -- relayed events ---------------------------------------------------------------------

    def intake(self, frames: list[bytes]) -> list[Addressed]:
        """Spool ``fire_master`` frames (``tag NUL data``) for the masters, refusing bad and reserved ones."""
        good, refusals = intake.checked(frames, self.settings.max_event_size, self.settings.id)
        out: list[Addressed] = [(None, refusal) for refusal in refusals]
        if good:
            out += self._spool(good)
        return out

    def relay(self, args: Any) -> tuple[dict, list[Addressed]]:
        """The ``relay`` control verb (``eventbus send``): spool one event; ``ValueError`` to refuse it."""
        frame = intake.relay_frame(args, self.settings.max_event_size, self.settings.id)
        actions = self._spool([frame])
        return {"seq": self.spool.next_seq - 1, "spooled": len(self.spool), "master": self.state()}, actions

    def _spool(self, frames: list[bytes]) -> list[Addressed]:
        dropped = self.spool.append(frames)
        out: list[Addressed] = []
        if dropped:
            behind = ""
            if self.hot and len(self.sessions) > 1:
                late = [s.address.name for s, cursor in zip(self.sessions, self.cursors.cursors)
                        if cursor.acked < self.spool.head]
                behind = f" (not acknowledged by {', '.join(late)})" if late else ""
            out.append((None, Refuse("spool", f"the relay spool is full (spool_max_events "
                                              f"{self.settings.spool_max_events}): dropped the {dropped} oldest "
                                              f"events{behind}, {self.spool.dropped} in all")))
        out += [(index, ms.Pump()) for index in self.linked() if self.sessions[index].relaying]
        return out

    # -- what it says -----------------------------------------------------------------------

    def state(self) -> str:
        """The link's state as one word: the live master's; when hot, ``accept`` if any master accepts."""
        if self.hot and any(s.state is ms.LinkState.ACCEPT for s in self.sessions):
            return ms.LinkState.ACCEPT.value
        return self.sessions[self.live].state.value

    def status(self) -> dict:
        """What the ``link`` control verb answers: the whole link, and each master's line."""
        relaying = {i for i in self.linked() if self.sessions[i].relaying}
        return {"state": self.state(), "spooled": len(self.spool), "dropped": self.spool.dropped,
                "head": self.spool.head, "next_seq": self.spool.next_seq,
                "master_key": self.sessions[self.live].master_key, "master_type": self.settings.master_type,
                "masters": [{**session.status(), "acked": cursor.acked, "live": index in relaying,
                             "linked": session.linked}
                            for index, (session, cursor) in enumerate(zip(self.sessions, self.cursors.cursors))]}


def _to(index: int, actions: list) -> list[Addressed]:
    return [(index, action) for action in actions]
