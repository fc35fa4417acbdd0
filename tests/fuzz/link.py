"""The link protocol as each side decodes the other: a rogue accepted minion's messages, a master's messages.

``link_master``: the master's ``MasterSessions`` (with its real key store
and relay seq files) after CURVE, hearing any messages from a minion whose
key is accepted (a rogue with a valid key), while an honest minion has its
own session. Nothing the rogue sends may put an event on the master bus
that the relay check refuses, publish under another minion's id or a
reserved tag, touch the honest minion's session or key, or send to another
connection; every answer must be a message ``protocol.parse`` reads.

``link_minion``: the minion's ``MinionSession`` (with its real spool)
hearing any messages from its master, the adapter's work (pump, heartbeat
ticks) done as ``eventbus.daemon.link.minion`` does it. What it puts on its own bus
must pass the bus's check; what it sends must be protocol.
"""
from __future__ import annotations

import os
import shutil
from typing import Iterator

import msgpack
import zmq

from eventbus.daemon.link import protocol
from eventbus.daemon.link import master_session as ms
from eventbus.daemon.link import minion_session as mi
from eventbus.daemon.link.relaystream import RelaySeqs
from eventbus.daemon.link.spool import Spool
from eventbus import config, keys
from eventbus.bus import payload, relay, wire
from eventbus.errors import InvalidEventError
from tests.fuzz import core

MAX_EVENT_SIZE = 4096
HEARTBEAT = 1.0
ROGUE, HONEST = "m1", "m2"
ROGUE_ROUTE, HONEST_ROUTE = b"\x00rogue", b"\x00honest"
MESSAGES_PER_INPUT = 24

LINK_WORDS = (protocol.HELLO, protocol.EVENTS, protocol.BATCH, protocol.PING, protocol.FIRED, protocol.WELCOME, protocol.ACK,
              protocol.RESEND, protocol.PONG, protocol.WHO, protocol.FIRE, b"\x81\xa2id\xa2m1", b"\xa2m2",
              b"\xa6result\xa6accept", b"\xa4last", b"\xa9heartbeat", b"\xff\xff\xff\xff\xff\xff\xff\xff",
              b"\x00\x00\x00\x00\x00\x00\x00\x01", b"salt/minion/m1/", b"salt/minion/m2/", b"salt/auth",
              b"salt/presence/", b"salt/key", b"\x00\x80", core.MESSAGE_MARK, core.FRAME_MARK)


def _frame(tag: str, **data: object) -> bytes:
    """A publisher's frame of an event, with a fixed ``_stamp`` (seeds are the same bytes each time)."""
    stamped = {**data, "_stamp": "2026-01-02T03:04:05.678901"}
    return wire.publish_frame(*payload.pack_event(tag, stamped, MAX_EVENT_SIZE, add_stamp=False))


def _empty(directory) -> None:
    """Remove what ``directory`` holds (it stays)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        path = directory / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# -- the master decoding a rogue accepted minion ------------------------------------------------


class MasterSide:
    """A master's sessions on files in ``directory``, reset to the same start for every input."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.rogue_key = zmq.curve_keypair()[0].decode()
        self.honest_key = zmq.curve_keypair()[0].decode()

    def fresh(self) -> ms.MasterSessions:
        """Both minions' keys accepted, both said hello; no relay seq stored yet."""
        for path in (*(self.directory / "pki" / s for s in (*keys.STATES, keys.DENIED)), self.directory / "relay"):
            _empty(path)
        store = keys.KeyStore(self.directory / "pki")
        for minion_id, key in ((ROGUE, self.rogue_key), (HONEST, self.honest_key)):
            store._write(keys.ACCEPTED, minion_id, key)
        machine = ms.MasterSessions(store, RelaySeqs(self.directory / "relay"), heartbeat=HEARTBEAT,
                                    auto_accept=False, max_event_size=MAX_EVENT_SIZE)
        machine.receive(HONEST_ROUTE, self.honest_key, protocol.hello(HONEST), 0.0)
        machine.receive(ROGUE_ROUTE, self.rogue_key, protocol.hello(ROGUE), 0.0)
        return machine

    def check(self, machine: ms.MasterSessions, actions: list) -> None:
        session = machine.sessions.get(self.rogue_key)
        rogue_id = session.minion_id if session is not None else ROGUE
        for action in actions:
            if isinstance(action, ms.Send):
                if action.route != ROGUE_ROUTE:
                    raise core.Finding(f"the rogue's message made the master send to another connection: {action}")
                protocol.parse(action.frames)
            elif isinstance(action, ms.PublishFrames):
                for frame in action.frames:
                    self._check_relayed(frame, rogue_id)
            elif isinstance(action, ms.Publish):
                payload.pack_event(action.tag, action.data, MAX_EVENT_SIZE)
                if action.tag.startswith(relay.MINION_PREFIX) and not action.tag.startswith(
                        f"{relay.MINION_PREFIX}{rogue_id}/"):
                    raise core.Finding(f"the rogue made the master fire {action.tag!r}")
        honest = machine.sessions.get(self.honest_key)
        if honest is None or not honest.accepted or honest.minion_id != HONEST or honest.route != HONEST_ROUTE:
            raise core.Finding(f"the rogue changed the honest minion's session: {honest}")
        if machine.store.lookup(HONEST) != (keys.ACCEPTED, self.honest_key):
            raise core.Finding(f"the rogue changed the honest minion's key: {machine.store.lookup(HONEST)}")

    @staticmethod
    def _check_relayed(frame: bytes, rogue_id: str) -> None:
        cut = payload.check_published(frame, MAX_EVENT_SIZE)
        tag = frame[:cut].decode()
        reason = relay.refused_tag(tag, rogue_id)
        if reason is not None:
            raise core.Finding(f"the master relayed a refused tag from the rogue: {reason}")
        data = payload.unpack_data(frame[cut + 1:])
        if data.get("id") != rogue_id or data.get("tag") != tag:
            raise core.Finding(f"a relayed event names id {data.get('id')!r}, not the sender {rogue_id!r}")


@core.target("link_master", "eventbus.daemon.link.master_session + link.protocol + relaystream + keys: the master decoding "
                            "an accepted (rogue) minion's messages after CURVE",
             max_len=16384, per_input=5.0, words=LINK_WORDS, seeds=lambda: master_seeds())
def link_master() -> Iterator[core.OneInput]:
    box = core.Sandbox(core.sandbox_root("link_master"))
    side = MasterSide(box.inside)
    with core.quiet_logs() as watcher:
        def run(data: bytes) -> None:
            machine = side.fresh()
            now = 1.0
            for frames in core.messages(data)[:MESSAGES_PER_INPUT]:
                now += 0.25
                side.check(machine, machine.receive(ROGUE_ROUTE, side.rogue_key, frames, now))
            side.check(machine, machine.check_presence(now + 10) + machine.presence_events())
            msgpack.packb(machine.status())
        try:
            yield core.checked(run, watcher, box)
        finally:
            box.remove()


def master_seeds() -> list[bytes]:
    """What a minion sends (``eventbus.daemon.link.minion_session``), in the orders a session sees them."""
    start = 1_700_000_000_000_000
    batch = [_frame(f"salt/minion/{ROGUE}/start", id=ROGUE), _frame("app/a", n=1), _frame("app/b", s="x" * 40)]
    return [core.join(m) for m in (
        [protocol.hello(ROGUE), protocol.events(start, 0, batch), protocol.PING_MESSAGE],
        [protocol.events(start, 0, batch), protocol.events(start, 0, batch), protocol.events(start + 10, 0, batch)],
        [protocol.events(start + 5, start + 4, batch[:1]), protocol.fired(1), protocol.fired(7)],
        [protocol.hello(HONEST), protocol.events(start, 0, batch)],
        [protocol.events(start, 0, [_frame("salt/auth", x=1), _frame(f"salt/minion/{HONEST}/x"), b"bad"])],
        [protocol.welcome("accept", 0, 1.0), protocol.ack(5), protocol.WHO_MESSAGE, [b"nope", b""]],
        [protocol.events(2 ** 63, 2 ** 63 - 1, batch)],
        [protocol.hello(ROGUE), protocol.packed_events(start, 0, batch), protocol.packed_events(start + 3, 0, batch)],
        [protocol.packed_events(start, start - 1, batch[:1] * 101), [protocol.BATCH, b"\x00" * 16, b"\x91\xc4"]],
    )]


# -- the minion decoding its master ---------------------------------------------------------------


class MinionSide:
    """A minion's session on a spool in ``directory``, reset for every input, relaying a few events."""

    def __init__(self, directory) -> None:
        self.directory = directory
        path = directory / "minion"
        path.write_text(f"root_dir: {directory}\nid: {ROGUE}\nmaster: 127.0.0.1\nheartbeat_interval: {HEARTBEAT}\n"
                        f"spool_max_events: 50\nmax_event_size: {MAX_EVENT_SIZE}\n")
        self.settings = config.load(config.MinionConfig, path)
        self.master_key = zmq.curve_keypair()[0].decode()
        self.spool: Spool | None = None

    def fresh(self) -> mi.MinionSession:
        if self.spool is not None:
            self.spool.close()
        _empty(self.directory / "spool")
        self.spool = Spool(self.directory / "spool", self.settings.spool_max_events, memory_events=20)
        session = mi.MinionSession(self.settings, self.spool, b"P" * 40, self.master_key, 0.0)
        session.start(0.0)
        session.handshake_succeeded(0.1)
        self.spool.append([_frame(f"app/{n}", n=n) for n in range(30)])
        return session

    def carry_out(self, session: mi.MinionSession, actions: list) -> None:
        """What ``eventbus.daemon.link.minion`` does with the actions, checking what it would put on the wire and bus."""
        for action in actions:
            if isinstance(action, mi.Send):
                protocol.parse(action.frames)
            elif isinstance(action, mi.PublishFrame):
                payload.check_published(action.frame, MAX_EVENT_SIZE)
            elif isinstance(action, mi.Pump):
                for _ in range(4):
                    batch = session.next_batch()
                    if batch is None:
                        break
                    message = protocol.parse(batch.frames)
                    if any(len(f) - 1 > MAX_EVENT_SIZE for f in message.frames):
                        raise core.Finding("the minion sends an event over max_event_size")
                    session.batch_sent(batch.last)
        spool = session.spool
        if not spool.head <= spool.next_seq - 1 or len(spool) > spool.max_events:
            raise core.Finding(f"the spool's bounds broke: head {spool.head}, next {spool.next_seq}")


@core.target("link_minion", "eventbus.daemon.link.minion_session + link.protocol + spool: the minion decoding its master's "
                            "messages (welcome, ack, resend, fire, who, pong)",
             max_len=16384, per_input=5.0, words=LINK_WORDS, seeds=lambda: minion_seeds())
def link_minion() -> Iterator[core.OneInput]:
    box = core.Sandbox(core.sandbox_root("link_minion"))
    side = MinionSide(box.inside)
    with core.quiet_logs() as watcher:
        def run(data: bytes) -> None:
            session = side.fresh()
            now = 1.0
            for index, frames in enumerate(core.messages(data)[:MESSAGES_PER_INPUT]):
                now += 0.4
                side.carry_out(session, session.receive(frames, now))
                if index % 3 == 2:
                    side.carry_out(session, session.tick(now))
            msgpack.packb(session.status())
        try:
            yield core.checked(run, watcher, box)
        finally:
            if side.spool is not None:
                side.spool.close()
            box.remove()


def minion_seeds() -> list[bytes]:
    """What a master sends (``eventbus.daemon.link.master_session``), in the orders a minion sees them."""
    fire = _frame(f"salt/minion/{ROGUE}/fire", x=1)
    return [core.join(m) for m in (
        [protocol.welcome("accept", 0, HEARTBEAT), protocol.ack(2 ** 62), protocol.PONG_MESSAGE],
        [protocol.welcome("pend", 0, HEARTBEAT), protocol.WHO_MESSAGE, protocol.welcome("accept", 5, 0.5)],
        [protocol.welcome("accept", 0, HEARTBEAT), protocol.resend(0), protocol.fire(3, fire)],
        [protocol.fire(1, b"bad"), protocol.welcome("reject", 0, 2.0), protocol.welcome("denied", 0, 2.0)],
        [protocol.welcome("accept", 2 ** 64 - 1, HEARTBEAT), protocol.ack(0), [protocol.ACK, b"short"]],
    )]
