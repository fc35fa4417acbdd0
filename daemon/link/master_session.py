"""The master's side of the link as a state machine without sockets: messages in, actions out.

In the spirit of pyzmq's ``zmq/auth/base.py``: all the logic is here, and
``eventbus.daemon.link.master`` only owns the sockets and timers, hands in what
arrives (the frames, the connection's route and its proven CURVE key, the
time) and carries out the returned actions in order. The key store and the
relay seqs are injected (files, no sockets), so tests drive this directly.

One ``Session`` per minion key (its relay de-duplication is ``RelayStream``)::

    (none) --hello--> the key store decides; salt/auth is fired either way
        accept               accepted: welcome(accept, last seq), salt/minion/<id>/start
        pend|reject|denied   held: welcome(act); it may ping, nothing else
    accepted --events(first, floor, frames)-->
        over its relay budget  unread, unpublished: resend(last) (the minion backs off)
        seqs <= last           duplicates (a batch resent after a lost ack): skipped
        first > max(last, floor) + 1   a gap the minion did not make: resend(last)
        otherwise              new events published, last stored, ack(last)
    any message from a key without a session --> who (the master restarted: say hello)
    operator: accept --> admitted at once; reject --> welcome(reject); delete --> who, forgotten

Every message of an accepted session counts as a heartbeat for ``Presence``;
fires to minions are tracked by ``FireJobs``.

Whatever a minion does wrong is a ``Refuse`` of one kind (``protocol``,
``oversize``, ``budget``, ``tag``, ``relay``, ``replay``, ``claim``, ``fired``,
``unaccepted``) naming it by its accepted id, with ``who`` set to that id:
the adapter logs each kind once per interval per minion, never per message,
so a rogue with an accepted key can neither flood the log nor hide another
minion's refusals behind its own.
"""
from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass, field
from typing import Union

from eventbus.daemon.link import protocol
from eventbus.daemon.link.targetfires import FireJobs
from eventbus.daemon.link.logentries import Note, Refuse
from eventbus.daemon.link.presence import Presence, chunks as presence_chunks
from eventbus.daemon.link.relaystream import RelayBudget, RelaySeqs, RelayStream
from eventbus import keys
from eventbus.errors import ProtocolError

# A minion's relay budget holds this many seconds' worth of events: a spool's backlog after an outage
# drains at once up to it, then at ``relay_rate_limit``.
RELAY_BURST_SECONDS = 2.0

# -- actions (what the adapter must do) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send link message ``frames`` to the connection ``route``."""

    route: bytes
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Publish:
    """Fire one of the master's own events (``salt/auth``, ``salt/key``, ...) on its bus."""

    tag: str
    data: dict


@dataclass(frozen=True, slots=True)
class PublishFrames:
    """Put relayed events, already framed and checked, on the master bus in this order (``numbers``: their
    relay seqs from ``minion_id``, the fleet identity of each: eventbus.cluster.records)."""

    frames: list[bytes]
    minion_id: str = ""
    numbers: list[int] = field(default_factory=list)


Action = Union[Send, Publish, PublishFrames, Refuse, Note]


@dataclass(slots=True)
class Session:
    """One minion key's link state on the master (slotted: a master holds thousands)."""

    key: str
    minion_id: str
    route: bytes
    accepted: bool = False
    stream: RelayStream | None = None
    accepted_as: str = ""  # the id this key was accepted under, kept while it says hello as another
    budget: RelayBudget | None = None  # its id's relay budget (None: no limit)
    over_budget: Refuse | None = None  # the refusal of a batch over it, made once

    @property
    def name(self) -> str:
        """How the log names this session: its accepted id, else its key and the id it said hello as."""
        if self.accepted:
            return f"minion {self.minion_id!r}"
        key = f"key {self.key[:12]}..."
        known = f"minion {self.accepted_as!r} ({key}, " if self.accepted_as else f"{key} ("
        return f"{known}hello as {self.minion_id!r})"


class MasterSessions:
    """Every minion session of one master: hello, relay with de-duplication, presence, fires."""

    def __init__(self, store: keys.KeyStore, seqs: RelaySeqs, *, heartbeat: float, auto_accept: bool,
                 max_event_size: int, fire_jobs: FireJobs | None = None, relay_rate_limit: int = 0) -> None:
        self.store = store
        self.seqs = seqs
        self.heartbeat = heartbeat
        self.auto_accept = auto_accept
        self.max_event_size = max_event_size
        self.sessions: dict[str, Session] = {}
        self.presence = Presence(1.5 * heartbeat)
        self.relayed = 0  # relayed events put on the bus, for the metrics (counted per batch)
        self.relay_rate_limit = relay_rate_limit  # events/s per minion id; 0: no limit
        # Per minion id, not per session: a hello again does not refill it.
        self.budgets: dict[str, RelayBudget] = {}
        self.throttled = 0  # batches refused over a minion's relay budget
        self.fire_jobs = fire_jobs or FireJobs()
        # The relay stream of each admitted minion id (the newest session's): an event of it imported from
        # another master of the fleet moves it on (``take_imported``).
        self.streams: dict[str, RelayStream] = {}

    # -- messages from minions ----------------------------------------------------------

    def receive(self, route: bytes, key: str, frames: list[bytes], now: float) -> list[Action]:
        """Handle one link message from the connection ``route`` whose proven key is ``key``."""
        session = self.sessions.get(key)
        try:
            message = protocol.parse(frames)
        except ProtocolError as exc:
            name, who = _named(session, key)
            return [Refuse("protocol", f"refused a link message from {name}: {exc}", who)]
        kind = message.kind
        if kind == protocol.HELLO:
            return self._hello(route, key, message.value["id"], now)
        if session is None:
            return [Send(route, protocol.WHO_MESSAGE)]
        session.route = route
        if session.accepted:
            self.presence.heard(session.minion_id, now)
        if kind == protocol.EVENTS:
            return self._events(session, message, now)
        if kind == protocol.PING:
            return [Send(route, protocol.PONG_MESSAGE)]
        if kind == protocol.FIRED:
            # An unaccepted session's answer counts for nothing; it may be honest (rejected since the fire).
            if not session.accepted or self.fire_jobs.ack(message.value, session.minion_id):
                return []
            return [Refuse("fired", f"{session.name} acknowledged fire job {message.value}, which was not sent "
                                    "to it", session.accepted_as)]
        return [Refuse("protocol", f"refused a {kind.decode()!r} message from {session.name}: not a minion's "
                                   "message", session.accepted_as)]

    def _hello(self, route: bytes, key: str, minion_id: str, now: float) -> list[Action]:
        if not keys.valid_key(key):
            return [Refuse("auth", "refused a hello from a connection without a CURVE key")]
        decision = self.store.decide(minion_id, key, self.auto_accept)
        actions: list[Action] = [Publish("salt/auth", {"result": decision.accepted, "act": decision.act,
                                                       "id": minion_id, "pub": key})]
        old = self.sessions.get(key)
        if decision.act == "denied":
            name, who = _named(old, key)
            actions.append(Refuse("claim", f"{name} claimed the id {minion_id!r}, which is bound to another "
                                           "key: denied", who))
        session = Session(key, minion_id, route, accepted_as=old.accepted_as if old is not None else "")
        if old is not None and old.minion_id != minion_id and old.accepted:
            self.presence.forget(old.minion_id)
        self.sessions[key] = session
        if decision.accepted:
            actions += self._admit(session, now)
            return actions
        if decision.act == "pend" and (old is None or old.minion_id != minion_id):
            actions.append(Note(logging.INFO, f"minion {minion_id!r} is pending; accept its key with "
                                              f"'eventbus key --accept {minion_id}'"))
        actions.append(Send(route, protocol.welcome(decision.act, 0, self.heartbeat)))
        return actions

    def _admit(self, session: Session, now: float) -> list[Action]:
        """Let an accepted minion relay: tell it where to resume, announce its start."""
        session.accepted = True
        session.accepted_as = session.minion_id
        session.stream = stream = RelayStream(session.minion_id, self.seqs)
        self.streams[session.minion_id] = stream
        if self.relay_rate_limit:
            rate = self.relay_rate_limit
            budget = self.budgets.get(session.minion_id)
            if budget is None:
                budget = self.budgets[session.minion_id] = RelayBudget(rate, rate * RELAY_BURST_SECONDS, now)
            session.budget = budget
        self.presence.heard(session.minion_id, now)
        return [Send(session.route, protocol.welcome("accept", stream.last, self.heartbeat)),
                Publish(f"salt/minion/{session.minion_id}/start", {
                    "id": session.minion_id, "cmd": "_minion_event",
                    "data": f"Minion {session.minion_id} started at {time.ctime()}"})]

    def _events(self, session: Session, message: protocol.Message, now: float) -> list[Action]:
        if not session.accepted:
            return [Refuse("unaccepted", f"refused events from {session.name}: its key is not accepted for "
                                         f"{session.minion_id!r}", session.accepted_as)]
        if protocol.oversize(message.frames):
            # Bigger than any minion sends: the whole batch is refused, unread, and its seqs stay unused.
            return [Refuse("oversize", f"refused a batch over {protocol.MAX_BATCH_EVENTS} events or "
                                       f"{protocol.MAX_BATCH_BYTES} bytes from {session.name}", session.accepted_as)]
        budget = session.budget
        if budget is not None and not budget.take(len(message.frames), now):
            # Over budget: nothing read, published or stored; the minion resends from its spool later.
            self.throttled += 1
            if session.over_budget is None:  # made once, when first needed: most minions never are
                session.over_budget = Refuse("budget", f"refused batches from {session.name} over its relay budget "
                                                       f"of {self.relay_rate_limit} events/s (relay_rate_limit): "
                                                       "answered resend", session.minion_id)
            return [session.over_budget, Send(session.route, protocol.resend(session.stream.last))]  # type: ignore
        first, floor = message.value
        verdict = session.stream.batch(first, floor, message.frames, self.max_event_size)  # type: ignore[union-attr]
        actions: list[Action] = list(verdict.refused)
        if verdict.published:
            self.relayed += len(verdict.published)
            actions.insert(0, PublishFrames(verdict.published, session.stream.minion_id,  # type: ignore[union-attr]
                                              verdict.numbers))
        actions.append(Send(session.route, verdict.reply))
        return actions

    def take_imported(self, minion_id: str, relay_seq: int) -> bool:
        """Whether another master's copy of ``minion_id``'s event ``relay_seq`` is new here; then it counts as
        relayed here (the minion's own copy, arriving later, is a duplicate). ``False`` when this master has it."""
        seqs = self.seqs
        if relay_seq in seqs.taken(minion_id):
            return False
        seqs.take(minion_id, relay_seq, relay_seq)
        stream = self.streams.get(minion_id)
        last = stream.last if stream is not None else seqs.load(minion_id)
        if relay_seq > last:
            if stream is not None:
                stream.last = relay_seq
            seqs.store(minion_id, relay_seq)
        return True

    # -- operators ----------------------------------------------------------------------

    def key_changed(self, change: keys.KeyChange, now: float) -> list[Action]:
        """An operator moved a key (``eventbus key``): fire salt/key and act on the minion's session."""
        actions: list[Action] = [Publish("salt/key", {"result": True, "id": change.minion_id, "act": change.act})]
        session = self.sessions.get(change.key)
        if session is None or session.minion_id != change.minion_id:
            return actions
        if change.act == "accept":
            actions.append(Publish("salt/auth", {"result": True, "act": "accept", "id": change.minion_id,
                                                 "pub": change.key}))
            return actions + self._admit(session, now)
        session.accepted = False
        session.accepted_as = ""
        self.presence.forget(change.minion_id)
        if change.act == "delete":
            del self.sessions[change.key]
            actions.append(Send(session.route, protocol.WHO_MESSAGE))
        else:
            actions.append(Send(session.route, protocol.welcome("reject", 0, self.heartbeat)))
        return actions

    def fire(self, target: str, frame: bytes, now: float) -> tuple[dict, list[Action]]:
        """Fire bus ``frame`` on every present, accepted minion matching glob ``target``: (job, actions)."""
        chosen = {s.minion_id: s for s in self.sessions.values()
                  if s.accepted and s.minion_id in self.presence and fnmatch.fnmatchcase(s.minion_id, target)}
        targets = sorted(chosen)
        job_id = self.fire_jobs.start(targets, now)
        message = protocol.fire(job_id, frame)
        return {"job": job_id, "targets": targets}, [Send(chosen[m].route, message) for m in targets]

    # -- presence -----------------------------------------------------------------------

    def check_presence(self, now: float) -> list[Action]:
        """Take minions silent for 1.5 heartbeats out of the present set."""
        return [Note(logging.INFO, f"minion {minion_id!r} stopped answering: not present")
                for minion_id in self.presence.expire(now)]

    def presence_events(self) -> list[Action]:
        """``salt/presence/present``, and ``salt/presence/change`` when the set changed since the last call.

        A set too big for one event under ``max_event_size`` goes in several,
        each with ``part`` (from 1) and ``parts``; so does a change.
        """
        present, new, lost = self.presence.report()
        actions: list[Action] = [Publish("salt/presence/present", data)
                                 for data in _in_parts({"present": present}, self.max_event_size)]
        if new or lost:
            actions += [Publish("salt/presence/change", data)
                        for data in _in_parts({"new": new, "lost": lost}, self.max_event_size)]
        return actions

    def status(self) -> dict:
        return {"sessions": len(self.sessions), "accepted": sum(s.accepted for s in self.sessions.values()),
                "present": self.presence.present(), "relayed": self.relayed}


def _in_parts(lists: dict[str, list[str]], max_event_size: int) -> list[dict]:
    """The event data carrying ``lists`` of ids: one map when they fit, else parts numbered from 1."""
    if len(presence_chunks([i for ids in lists.values() for i in ids], max_event_size)) == 1:
        return [lists]
    cut = [(name, part) for name, ids in lists.items() if ids for part in presence_chunks(ids, max_event_size)]
    return [{**{name: [] for name in lists}, name: part, "part": number, "parts": len(cut)}
            for number, (name, part) in enumerate(cut, 1)]


def _named(session: Session | None, key: str) -> tuple[str, str]:
    """How the log names the sender of a message, and the accepted id its refusals are grouped under."""
    if session is None:
        return f"key {key[:12]}...", ""
    return session.name, session.accepted_as
