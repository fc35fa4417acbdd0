"""The minion's side of the link with one master, as a state machine without sockets: events in, actions out.

``eventbus.daemon.link.minion`` owns the sockets (``masterconn``, one per
master) and the timers; it tells ``MinionSession`` what happened with this
master (a handshake, a message, a tick) and carries out the actions
returned. The spool is read through this master's cursor
(``eventbus.daemon.link.cursors``; files, no sockets), so tests drive this
directly; relayed events are checked and spooled once for every master by
``eventbus.daemon.link.minion_masters``.

States (``LinkState``; the ``link`` control verb reports the value)::

    CONNECTING --handshake ok--> HELLO (hello sent)
    HELLO --welcome(accept, last)--> ACCEPT: spool acked up to last, batches pumped
    HELLO --welcome(pend|reject|denied)--> PEND | REJECT | DENIED: nothing relayed, pings go on
    any --who--> HELLO (the master restarted: hello again)
    any --disconnected--> CONNECTING (unacked batches will be resent from the spool head)
    any but CONNECTING --tick with the master silent 2 heartbeats--> Connect (rebuild), CONNECTING

In ACCEPT, ``ack(seq)`` frees the spool up to seq; ``resend(seq)`` (the
master saw a gap, or the minion is over its relay budget there) frees up to
seq and resends after it; batches without any ack for 2 heartbeats are
resent from the spool head. A ``resend`` is answered by a pause
(``ResumeAfter``, from ``BACKOFF_FIRST`` doubling to ``BACKOFF_MAX`` while
the master keeps refusing) and one batch in flight, doubling with each ack
up to ``IN_FLIGHT`` events; the answers to batches sent before that resend
(the master answers each, in order) only free the spool.

First contact: with no master key pinned or configured the machine asks for
it (``AskKey``), pins the offered key (``PinKey``) and connects. A failed
CURVE handshake asks again (at most every ``KEY_CHECK_EVERY`` s) to name a
changed master key in the log; a changed key is never pinned over the old.
"""
from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Union

from eventbus.daemon.link import protocol
from eventbus.daemon.link.cursors import Cursor
from eventbus.daemon.link.logentries import Note, Refuse
from eventbus.daemon.link.spool import Spool
from eventbus import keys
from eventbus.bus import payload
from eventbus.config import MinionConfig
from eventbus.errors import InvalidEventError, ProtocolError
from eventbus.masters import MasterAddress

BATCH_EVENTS = protocol.MAX_BATCH_EVENTS
BATCH_BYTES = protocol.MAX_BATCH_BYTES  # the spool stops adding events once the batch has this many bytes
IN_FLIGHT = 20_000
KEY_CHECK_EVERY = 30.0
BACKOFF_FIRST = 0.01  # s paused after the master's first resend ...
BACKOFF_MAX = 0.5     # ... doubling up to this while it refuses batch after batch


class LinkState(enum.Enum):
    """Where this minion stands with its master."""

    CONNECTING = "connecting"  # no CURVE session (yet, or any more)
    HELLO = "hello"            # session up, hello sent, no welcome yet
    ACCEPT = "accept"          # welcomed: relaying
    PEND = "pend"              # key pending on the master
    REJECT = "reject"          # key rejected
    DENIED = "denied"          # the id is bound to another key on the master


# -- actions (what the adapter must do) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """(Re)build the CURVE connection to the master with ``MinionSession.master_key``."""


@dataclass(frozen=True, slots=True)
class AskKey:
    """Ask the master's key offer (``publish_port``) for its public key; answer with ``key_offered``."""


@dataclass(frozen=True, slots=True)
class PinKey:
    """Remember ``key`` as the master's for good (first contact)."""

    key: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send a link message to the master (dropped if the connection's queue is full)."""

    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Pump:
    """Send spooled batches: ``next_batch()`` until ``None`` or the socket is full, ``batch_sent`` each."""


@dataclass(frozen=True, slots=True)
class ResumeAfter:
    """Call ``MinionSession.resume`` in ``delay`` seconds (the pause after a ``resend``)."""

    delay: float


@dataclass(frozen=True, slots=True)
class PublishFrame:
    """Put a fire from the master (a checked ``tag NUL data`` frame) on the local bus."""

    frame: bytes


Action = Union[Connect, AskKey, PinKey, Send, Pump, ResumeAfter, PublishFrame, Refuse, Note]


class Batch(NamedTuple):
    """A batch of spooled events as a link message, and the seq of its last event."""

    last: int
    frames: list[bytes]


class MinionSession:
    """This minion's link to its master, and its relay spool."""

    def __init__(self, settings: MinionConfig, spool: Spool | Cursor, public_key: bytes, master_key: str | None,
                 now: float, *, address: MasterAddress | None = None, pinned_at: str = "",
                 heartbeat: float | None = None) -> None:
        self.settings = settings
        self.spool = spool  # this master's cursor in the spool (or the spool itself, with one master)
        self.address = address or settings.masters[0]
        self.pinned_at = pinned_at or "the pinned key file"
        self.minion_id = settings.id
        self.public_key = public_key
        self.master_key = master_key
        self.heartbeat = heartbeat or settings.heartbeat_interval
        self.relaying = True         # False: linked but not sent to (a failover minion's earlier master, watched)
        self.packed = False          # the master's welcome offered batches in one frame (protocol ``batch``)
        self.state = LinkState.CONNECTING
        self.linked = False          # a Connect was issued: a link socket exists
        self.sent = spool.head       # newest seq handed to the link
        self.window = IN_FLIGHT      # events that may be in flight unacked
        self.backoff = 0.0           # the last pause after a resend; 0 after an ack
        self.paused = False          # a ResumeAfter is pending: nothing is sent
        self.round = 0               # bumped at each rewind to the spool head
        self.in_flight: deque[tuple[int, int]] = deque()  # (last seq, round) of each batch sent, oldest first
        self.last_heard = now        # last sign of life, or the last (re)connect: the connection's own clock
        self.last_answer = now       # last sign of life only: a rebuilt connection is no answer
        self.live_since = now        # when the minion chose this master (failover silence counts from then)
        self.refused_since: float | None = None  # since when it rejects or denies this minion (no use to relay to)
        self.last_progress = now
        self.key_checked = float("-inf")
        self.mismatch_checked = float("-inf")
        self._where = self.address.name

    # -- start and the master's key -----------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self.master_key:
            return self._connect(now)
        return [Note(logging.INFO, f"no master key pinned yet: asking {self.address.host}:"
                                   f"{self.address.publish_port} for it"), *self._ask_key(now)]

    def _ask_key(self, now: float) -> list[Action]:
        self.key_checked = now
        return [AskKey()]

    def _connect(self, now: float) -> list[Action]:
        self.linked = True
        self.state = LinkState.CONNECTING
        self.last_heard = now
        self._rewind()
        return [Connect()]

    def key_offered(self, frames: list[bytes], now: float) -> list[Action]:
        """The key offer answered ``frames`` (``[b"key", <Z85 public key>]``)."""
        offered = frames[1] if len(frames) == 2 and frames[0] == protocol.KEY_OFFER else b""
        if not keys.valid_key(offered):
            return [Note(logging.ERROR, f"the master at {self.address.host}:{self.address.publish_port} "
                                        "offered no valid public key")]
        offered_key = offered.decode()
        if self.master_key is None:
            self.master_key = offered_key
            return [PinKey(offered_key), Note(logging.INFO, f"pinned the public key {offered_key} of the master "
                                                            f"at {self._where} (first contact)"),
                    *self._connect(now)]
        if offered_key != self.master_key:
            where = "the config" if self.address.pubkey else self.pinned_at
            return [Note(logging.ERROR, f"refusing the master at {self._where}: its public key changed "
                                        f"from {self.master_key} (pinned in {where}) to {offered_key}; if that "
                                        "change is intended, remove the pinned key and restart the minion")]
        return []

    # -- the connection -----------------------------------------------------------------

    def handshake_succeeded(self, now: float) -> list[Action]:
        self.state = LinkState.HELLO
        self.last_heard = self.last_answer = now
        return [Note(logging.INFO, f"connected to the master at {self._where}"),
                Send(protocol.hello(self.minion_id))]

    def disconnected(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state is not LinkState.CONNECTING:
            actions.append(Note(logging.WARNING, f"lost the connection to the master at {self._where}; reconnecting"))
        self.state = LinkState.CONNECTING
        self._rewind()
        return actions

    def handshake_failed(self, now: float) -> list[Action]:
        actions: list[Action] = [Refuse("handshake", f"the CURVE handshake with the master at {self._where} failed")]
        if now - self.mismatch_checked > KEY_CHECK_EVERY:
            self.mismatch_checked = now
            actions += self._ask_key(now)
        return actions

    # -- messages from the master ---------------------------------------------------------

    def receive(self, frames: list[bytes], now: float) -> list[Action]:
        """Handle one link message from the master."""
        self.last_heard = self.last_answer = now
        try:
            message = protocol.parse(frames)
        except ProtocolError as exc:
            return [Refuse("protocol", f"ignored a message from the master: {exc}")]
        kind = message.kind
        if kind == protocol.ACK:
            self.spool.ack(message.value)
            self._answered(message.value)
            self.last_progress = now
            self.backoff = 0.0
            if self.window < IN_FLIGHT:
                self.window = min(IN_FLIGHT, 2 * self.window)
            return [Pump()]
        if kind == protocol.WELCOME:
            return self._welcome(message.value, now)
        if kind == protocol.FIRE:
            return self._fire(message.value, message.frames[0])
        if kind == protocol.RESEND:
            return self._resend(message.value)
        if kind == protocol.WHO:
            self.state = LinkState.HELLO
            return [Send(protocol.hello(self.minion_id))]
        if kind == protocol.PONG:
            return []
        return [Refuse("protocol", f"ignored a {kind.decode()!r} message from the master")]

    def _welcome(self, body: dict, now: float) -> list[Action]:
        result = LinkState(body["result"])
        heartbeat = body.get("heartbeat")
        if isinstance(heartbeat, (int, float)) and 0 < heartbeat < self.heartbeat:
            self.heartbeat = float(heartbeat)
        actions: list[Action] = []
        if result is not self.state:
            level = logging.INFO if result is LinkState.ACCEPT else logging.WARNING
            actions.append(Note(level, f"the master at {self._where} answered {result.value!r} to this minion (id "
                                       f"{self.minion_id!r}, key {self.public_key.decode()})"))
        self.state = result
        self.packed = body.get("packed") is True
        if result in (LinkState.REJECT, LinkState.DENIED):
            self.refused_since = self.refused_since or now
        else:
            self.refused_since = None
        if result is not LinkState.ACCEPT:
            return actions
        last = body.get("last")
        if isinstance(last, int):
            self.spool.ack(last)
        self._rewind()
        self.last_progress = now
        actions.append(Pump())
        return actions

    def _rewind(self) -> None:
        """Send again from the spool head; what was in flight will not be answered (a new connection, or none)."""
        self.sent = self.spool.head
        self.round += 1
        self.in_flight.clear()

    def _answered(self, seq: int) -> tuple[int, int] | None:
        """Forget the batches an answer up to ``seq`` covers; the batch after them (the one refused), if any."""
        in_flight = self.in_flight
        while in_flight and in_flight[0][0] <= seq:
            in_flight.popleft()
        return in_flight.popleft() if in_flight else None

    def _resend(self, seq: int) -> list[Action]:
        """The master has every event up to ``seq`` and took none after it: resend from there, after a pause.

        Only a refusal of a batch sent since the last rewind counts: the
        master answers every batch in flight before it, and those answers
        say nothing new (the batches after a refused one are gaps to it).
        """
        self.spool.ack(seq)
        refused = self._answered(seq)
        if self.paused or (refused is not None and refused[1] != self.round):
            self.sent = max(self.sent, self.spool.head)
            return []
        # Rewound on the same connection: the batches still in flight will be answered, as stale.
        self.sent = self.spool.head
        self.round += 1
        self.window = BATCH_EVENTS
        self.backoff = min(BACKOFF_MAX, 2 * self.backoff) if self.backoff else BACKOFF_FIRST
        self.paused = True
        return [ResumeAfter(self.backoff)]

    def resume(self) -> list[Action]:
        """The pause after a resend is over: send again."""
        self.paused = False
        return [Pump()]

    def _fire(self, job_id: int, frame: bytes) -> list[Action]:
        try:
            payload.check_published(frame, self.settings.max_event_size)
        except InvalidEventError as exc:
            return [Refuse("fire", f"refused a fire from the master: {exc}")]
        return [PublishFrame(frame), Send(protocol.fired(job_id))]

    # -- the heartbeat --------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Once per heartbeat: ping, give up on a silent master, resend batches that got no ack."""
        if not self.linked:
            if self.master_key is None and now - self.key_checked > self.heartbeat * 2:
                return self._ask_key(now)
            return []
        actions: list[Action] = []
        if self.state is not LinkState.CONNECTING:
            actions.append(Send(protocol.PING_MESSAGE))
            if now - self.last_heard > 2 * self.heartbeat + 0.5:
                actions.append(Note(logging.WARNING, f"the master at {self._where} has not answered for "
                                                     f"{now - self.last_heard:.1f} s; reconnecting"))
                return actions + self._connect(now)
        if self.state is LinkState.ACCEPT and self.sent > self.spool.head and now - self.last_progress > 2 * self.heartbeat:
            self._rewind()
            self.last_progress = now
        actions.append(Pump())
        return actions

    def next_batch(self) -> Batch | None:
        """The next batch to send while accepted, not paused and under ``window`` unacked events, else ``None``."""
        if self.state is not LinkState.ACCEPT or self.paused or not self.relaying:
            return None
        spool = self.spool
        if self.sent - spool.head >= self.window:
            return None
        batch = spool.read(self.sent, BATCH_EVENTS, BATCH_BYTES)
        if not batch:
            return None
        message = protocol.packed_events if self.packed else protocol.events
        return Batch(batch[-1][0], message(batch[0][0], spool.head, [frame for _, frame in batch]))

    def batch_sent(self, last: int) -> None:
        """The link took the batch ending at ``last``."""
        self.sent = last
        self.in_flight.append((last, self.round))

    def close(self) -> None:
        """The adapter closed this master's sockets (a failover minion moved on): not linked any more."""
        self.linked = False
        self.state = LinkState.CONNECTING
        self._rewind()

    def silent_for(self, now: float) -> float:
        """Seconds since this master last answered (or since it was chosen): rebuilding the connection to a
        master that does not answer does not restart this count, and a master that rejects or denies this
        minion has not answered since it said so."""
        answered = self.last_answer if self.refused_since is None else self.refused_since
        return now - max(answered, self.live_since)

    def status(self) -> dict:
        """This master's line in the ``link`` control verb's answer."""
        return {"master": self._where, "state": self.state.value,
                "pending": len(self.spool), "master_key": self.master_key}
