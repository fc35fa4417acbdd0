"""One minion's relay stream as the master sees it: which seqs are new, what to publish, what to answer.

A minion numbers its relayed events with contiguous seqs. The master keeps
the newest seq it accepted per minion on disk (``RelaySeqs``), so a batch
resent after a lost ack, or replayed to a restarted master, publishes
nothing twice. No sockets: ``RelayStream.batch`` takes a batch and returns
the frames to publish, the refusals to log and the answer to send.
``RelayBudget`` bounds how many events a second one minion may relay, so
that one flooding the link cannot take the master's CPU from the others.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence

from eventbus.daemon.cluster.ranges import Ranges
from eventbus.daemon.link import protocol
from eventbus.daemon.link.logentries import Refuse
from eventbus.errors import InvalidEventError


class RelaySeqs:
    """The newest relay seq accepted per minion: one small file per minion id under ``directory``.

    With ``taken`` (a master of a fleet-wide bus) it also keeps, per minion, every relay seq this master
    has (``Ranges`` in ``directory/taken/<id>``): after a failover a minion's later events can be here
    while earlier ones, taken by another master, still come in from the fleet stream.
    """

    def __init__(self, directory: Path, taken: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prefix = os.path.join(directory, "")  # a str: no path object per batch
        self.tracking = taken
        self._taken: dict[str, Ranges] = {}
        if taken:
            (directory / "taken").mkdir(exist_ok=True, mode=0o700)

    def load(self, minion_id: str) -> int:
        """The newest seq accepted from ``minion_id``; 0 when none was."""
        try:
            fd = os.open(self._prefix + minion_id, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            seq = int(os.read(fd, 64) or b"0")
        except ValueError:
            return 0
        finally:
            os.close(fd)
        return seq if 0 <= seq <= protocol.MAX_SEQ else 0

    def taken(self, minion_id: str) -> Ranges:
        """The relay seqs of ``minion_id`` this master has (tracking only)."""
        ranges = self._taken.get(minion_id)
        if ranges is None:
            try:
                with open(self._prefix + "taken/" + minion_id, "rb") as kept:
                    ranges = Ranges.unpack(kept.read())
            except FileNotFoundError:
                # Tracking starts now: every seq up to the newest accepted was had here.
                last = self.load(minion_id)
                ranges = Ranges([(0, last)] if last else [])
            self._taken[minion_id] = ranges
        return ranges

    def take(self, minion_id: str, low: int, high: int) -> None:
        """Note relay seqs ``low..high`` of ``minion_id`` as had here (tracking only; once per batch)."""
        ranges = self.taken(minion_id)
        if ranges.add(low, high):
            raw = ranges.pack()
            fd = os.open(self._prefix + "taken/" + minion_id, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, raw, 0)
                os.ftruncate(fd, len(raw))
            finally:
                os.close(fd)

    def store(self, minion_id: str, seq: int) -> None:
        """Remember ``seq`` as the newest accepted from ``minion_id`` (once per batch, not per event)."""
        fd = os.open(self._prefix + minion_id, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"%020d" % seq, 0)
        finally:
            os.close(fd)


class RelayBudget:
    """One minion's relay budget: a token bucket of ``rate`` events a second holding ``burst`` at most.

    A batch is taken while the bucket is not in debt, and costs all its
    events (duplicates too: reading them costs the master as much), so a
    batch bigger than the bucket still gets through, and over time a minion
    relays ``rate`` events a second on average. Time is handed in.
    """

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def take(self, events: int, now: float) -> bool:
        """Whether a batch of ``events`` fits the budget at ``now`` (then they are spent)."""
        tokens = self.tokens + (now - self.at) * self.rate
        self.tokens = tokens if tokens < self.burst else self.burst
        self.at = now
        if self.tokens <= 0:
            return False
        self.tokens -= events
        return True


class Verdict(NamedTuple):
    """What a batch comes to: master-bus frames to publish (``numbers``: their relay seqs), refusals to log,
    the answer to send."""

    published: list[bytes]
    refused: list[Refuse]
    reply: list[bytes]
    numbers: list[int] = []


class RelayStream:
    """An accepted minion's relay stream: de-duplication by seq, the relayed event's shape, ack or resend."""

    __slots__ = ("minion_id", "seqs", "last", "floor", "framer")

    def __init__(self, minion_id: str, seqs: RelaySeqs) -> None:
        self.minion_id = minion_id
        self.seqs = seqs
        self.last = seqs.load(minion_id)
        self.floor = 0  # the highest spool head this minion has reported since its hello
        self.framer = protocol.RelayFramer(minion_id)

    def batch(self, first: int, floor: int, frames: Sequence[bytes], max_event_size: int) -> Verdict:
        """Judge the batch of seqs ``first, first+1, ...``; ``floor`` is the minion's spool head.

        Seqs up to ``last`` are duplicates and skipped. A batch starting past
        ``max(last, floor) + 1`` is a gap the minion did not make (its own
        dropped events end at ``floor``): nothing is published, ``resend(last)``.
        Otherwise the new events are framed and checked, ``last`` moves (and
        is stored) and the answer is ``ack(last)``; refused events count as
        handled. A batch starting at or below a spool head the minion reported
        is a replay no honest minion sends (its spool holds nothing there): its
        duplicates are skipped all the same, and it is refused as ``replay``.
        """
        last = self.last
        refused: list[Refuse] = []
        if first <= max(self.floor, floor) and frames:
            refused.append(Refuse("replay", f"minion {self.minion_id!r} replayed relay seqs from {first}, at or "
                                            f"below its own spool head {max(self.floor, floor)}: what was "
                                            "relayed before is skipped", self.minion_id))
        self.floor = max(self.floor, floor)
        if first > max(last, floor) + 1:
            return Verdict([], refused, protocol.resend(last))
        published: list[bytes] = []
        numbers: list[int] = []
        keep = published.append
        number = numbers.append
        make = self.framer.frame
        seq = first - 1
        for frame in frames:
            seq += 1
            if seq <= last:
                continue
            try:
                keep(make(frame, max_event_size)[1])
                number(seq)
            except InvalidEventError as exc:
                refused.append(Refuse("tag" if exc.reason == "reserved" else "relay",
                                      f"refused an event from minion {self.minion_id!r}: {exc}", self.minion_id))
        if seq > last:
            self.last = seq
            self.seqs.store(self.minion_id, seq)
            if self.seqs.tracking:
                self.seqs.take(self.minion_id, max(first, last + 1), seq)
        return Verdict(published, refused, protocol.ack(self.last), numbers)
