"""The master's side of the link: the sockets and timers around ``eventbus.daemon.link.master_session``.

Sockets (all on the daemon's loop, no threads):

- ``ret_port``: a CURVE ROUTER carrying every link message both ways. Each
  message's ``User-Id`` (the minion's proven public key, see ``eventbus.daemon.link.zap``)
  picks its session; ids come from the key store, never from the payload.
- ``publish_port``: a plain ROUTER that answers anything with the master's
  public key, so a minion can pin it on first contact. A public key is not
  a secret; nothing else crosses this port.

What the messages mean, and what to answer, is ``MasterSessions``'s call;
this class only reads frames, hands them over and carries out the actions.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Any

import zmq

from eventbus.daemon.link import protocol
from eventbus.daemon.link import master_session as ms
from eventbus.daemon.bus import Bus
from eventbus.refusallog import Complaints
from eventbus.daemon.link.targetfires import FIRE_JOB_TTL
from eventbus.daemon.loop import Loop
from eventbus.daemon.cluster.origins import RELAY, OriginWriter
from eventbus.daemon.link.relaystream import RelaySeqs
from eventbus.daemon.link.zap import DOMAIN, ZapHandler
from eventbus import keys
from eventbus.bus import payload, wire
from eventbus.config import MasterConfig
from eventbus.errors import EventBusError, UnknownKeyError

log = logging.getLogger(__name__)

FRAME_SLACK = 4096
# Frames or events (whichever a message has more of: a ``batch`` message carries its events in one frame)
# taken from the link per turn of the loop: about two full batches, a few ms, so a minion flooding the link
# never holds up the bus, the control socket, the timers or the other minions for long. Minions take turns
# at the ROUTER (it reads its connections round-robin), so one that floods delays the others by about one
# of its batches.
TURN_FRAMES = 2 * protocol.MAX_BATCH_EVENTS
# What a hello costs of that budget: it reads key and seq files and fires two events (about 100 µs, some twenty
# relayed events' worth), so a reconnect storm's hellos take at most ~2 ms of each turn and the bus, the control
# socket and the timers wait no longer behind them.
HELLO_FRAMES = 20
# Frames of a message worth copying (the biggest batch's, and one more): a bigger batch is refused unread.
MESSAGE_FRAMES = protocol.MAX_BATCH_EVENTS + 3
# Messages queued per minion connection before ZeroMQ stops reading it (the minion then waits): a minion's
# whole window of unacknowledged batches, so that one flooding the link holds a bounded backlog in memory.
RECEIVE_QUEUE = 256
# The kernel caps it at net.core.somaxconn (4096 on current Linux).
LISTEN_BACKLOG = 4096
# Key changes (``eventbus key``) acted on per turn of the loop: each welcomes its minion and fires two or three
# events, about 50 µs in all, so ``--accept-all`` of a 10,000-key fleet holds no turn longer than ~15 ms.
KEY_CHANGES_PER_TURN = 256


class MasterLink:
    """Every minion's link to this master."""

    def __init__(self, settings: MasterConfig, context: zmq.Context, loop: Loop, bus: Bus,
                 origins: OriginWriter | None = None) -> None:
        self.settings = settings
        self.origins = origins  # with a cluster: each relayed event's fleet identity (daemon/cluster/origins.py)
        self.loop = loop
        self.bus = bus
        self.heartbeat = settings.heartbeat_interval
        self.max_event_size = settings.max_event_size
        self.complaints = Complaints(log)
        public, secret = keys.key_pair(settings.pki_dir, "master")
        self.public_key = public
        self.keys = keys.KeyStore(settings.pki_dir)
        self.machine = ms.MasterSessions(self.keys, RelaySeqs(settings.cachedir / "relay", taken=origins is not None),
                                         heartbeat=self.heartbeat, auto_accept=settings.auto_accept,
                                         max_event_size=settings.max_event_size,
                                         relay_rate_limit=settings.relay_rate_limit)
        self.zap = ZapHandler(context, loop)
        self._key_changes: collections.deque[keys.KeyChange] = collections.deque()
        self._admitting = False

        self.link_socket = context.socket(zmq.ROUTER)
        self.link_socket.curve_server = True
        self.link_socket.curve_publickey = public
        self.link_socket.curve_secretkey = secret
        self.link_socket.zap_domain = DOMAIN
        # A frame holds one event, or a whole batch (protocol ``batch``: up to MAX_BATCH_BYTES and its last event).
        self.link_socket.setsockopt(zmq.MAXMSGSIZE, settings.max_event_size + protocol.MAX_BATCH_BYTES + FRAME_SLACK)
        self.link_socket.setsockopt(zmq.LINGER, 0)
        self.link_socket.setsockopt(zmq.SNDHWM, 10_000)
        self.link_socket.setsockopt(zmq.RCVHWM, RECEIVE_QUEUE)
        # Connections waiting to be accepted: a restarted master meets its whole fleet within a second or two,
        # and past ZeroMQ's default of 100 the kernel drops their connects, each retried 1, 3, 7... s later.
        self.link_socket.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        io_threads = context.get(zmq.IO_THREADS)
        if io_threads > 1:
            # Minions' connections (their CURVE handshakes and crypto) on the last I/O thread, so the bus's
            # own connections, on the others, never wait behind a reconnect storm. Not at a lower priority:
            # other busy processes on the host would then starve the minions' relays and heartbeats.
            self.link_socket.setsockopt(zmq.AFFINITY, 1 << (io_threads - 1))
        # Dead connections go by TCP keepalive, not ZeroMQ heartbeats: libzmq 4.3 aborts the whole process
        # when a heartbeat falls due on a connection whose queue was full when its peer closed it (its
        # "!_io_error" assertion), which any peer could bring about. Minions' pings keep presence.
        self.link_socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
        self.link_socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, max(1, round(self.heartbeat * 3)))
        self.link_socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, round(self.heartbeat)))
        self.link_socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        self.offer_socket = context.socket(zmq.ROUTER)
        self.offer_socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        self.offer_socket.setsockopt(zmq.LINGER, 0)
        try:
            self._listen(self.link_socket, "ret_port", settings.ret_port)
            self._listen(self.offer_socket, "publish_port", settings.publish_port)
        except EventBusError:
            self.link_socket.close(0)
            self.offer_socket.close(0)
            self.zap.close()
            raise

        loop.add_reader(self.link_socket, self._on_link, own=True)
        loop.add_reader(self.offer_socket, self._on_offer, own=True)
        loop.call_every(self.heartbeat / 4, lambda: self._run(self.machine.check_presence(time.monotonic())))
        loop.call_every(FIRE_JOB_TTL / 8, lambda: self.machine.fire_jobs.expire(time.monotonic()))
        if settings.presence_events:
            loop.call_every(settings.loop_interval, lambda: self._run(self.machine.presence_events()))
        bus.register_verb(wire.VERB_KEY, self._key_verb)
        bus.register_verb(wire.VERB_FIRE_MINIONS, self._fire_verb)
        bus.register_verb(wire.VERB_FIRE_STATUS, self._fire_status_verb)
        bus.register_verb(wire.VERB_LINK, self._link_verb)
        log.info("link listening on %s:%d (CURVE), master key offered on port %d",
                 settings.interface, settings.ret_port, settings.publish_port)

    def _listen(self, sock: zmq.Socket, key: str, port: int) -> None:
        address = f"tcp://{self.settings.interface}:{port}"
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise EventBusError(f"cannot listen for minions on {address} ({key}): {exc}") from None

    # -- messages from minions ------------------------------------------------------

    def _on_offer(self) -> bool | None:
        for _ in range(64):
            try:
                frames = self.offer_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.offer_socket.send_multipart([frames[0], protocol.KEY_OFFER, self.public_key])
        return True  # 64 answered: the loop calls again on its next turn

    def _on_link(self) -> bool | None:
        receive = self.machine.receive
        actions: list[ms.Action] = []
        budget = TURN_FRAMES
        more = True  # unless the socket is found empty: more may wait, the loop calls again next turn
        try:
            for _ in range(64):
                message = self._next_message()
                if message is None:
                    more = False
                    break
                frames, count = message
                if len(frames) < 2:
                    budget -= count
                    continue
                if frames[1].bytes == protocol.HELLO:
                    budget -= HELLO_FRAMES
                try:
                    key = frames[1].get("User-Id")
                except zmq.ZMQError:
                    key = ""
                done = receive(frames[0].bytes, key, [f.bytes for f in frames[1:]], time.monotonic())
                published = sum(len(a.frames) for a in done if type(a) is ms.PublishFrames)  # type: ignore
                budget -= max(count, published)
                actions += done
                if budget <= 0:
                    break
        finally:
            # The turn's messages together: their events in one publish (one journal write), then the answers.
            sent = self._carry_out(actions)
        # A send after the last read may take the socket's signal of a message that came meanwhile: look again
        # on the next turn (not at once: a flooding minion must not keep the loop from the other sockets).
        return True if more or sent else None

    def _next_message(self) -> tuple[list[zmq.Frame], int] | None:
        """The next message's first ``MESSAGE_FRAMES`` frames (after the route) and its frame count; ``None``: none.

        A part at a time, keeping only what the machine may read: ``recv_multipart``
        would cost three times as much per frame of a rogue's million-frame message.
        """
        recv = self.link_socket.recv
        try:
            frame = recv(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        frames = [frame]
        count = 1
        while frame.more:
            try:
                frame = recv(zmq.NOBLOCK, copy=False)  # the parts of a message arrive together
            except zmq.Again:
                break
            count += 1
            if count <= 1 + MESSAGE_FRAMES:
                frames.append(frame)
        return frames, count

    def _run(self, actions: list[ms.Action]) -> None:
        """Carry out the machine's actions, in order, from outside ``_on_link``."""
        if self._carry_out(actions):
            self.loop.touched(self.link_socket)  # a send may take the socket's signal (eventbus.daemon.loop)

    def _carry_out(self, actions: list[ms.Action]) -> bool:
        """Carry out the machine's actions; whether any was a send on the link.

        Events for the bus are gathered and published together, in order,
        before any message is sent: one journal write for a turn's relayed
        batches, or a storm's ``salt/auth`` and start events, and an ack
        leaves only once its events are on the bus.

        ``_on_link`` asks for another turn when this sent anything (a send may
        take the signal of a message that arrived after the last read), never
        marks its socket touched: a touched socket that always has more (a
        flooding minion) would keep the loop from ever sleeping, serving the
        bus, the control socket or the timers.
        """
        frames: list[bytes] = []
        sends: list[list[bytes]] = []
        relayed: list[tuple[int, int, int, str]] | None = [] if self.origins is not None else None
        for action in actions:
            kind = type(action)
            if kind is ms.PublishFrames:
                if relayed is not None:
                    first = self.bus.seq + 1 + len(frames)
                    who = action.minion_id  # type: ignore[union-attr]
                    relayed += [(seq, RELAY, number, who)
                                for seq, number in enumerate(action.numbers, first)]  # type: ignore[union-attr]
                frames += action.frames  # type: ignore[union-attr]
            elif kind is ms.Send:
                sends.append([action.route, *action.frames])  # type: ignore[union-attr]
            elif kind is ms.Publish:
                try:
                    frames.append(self.bus.own_frame(action.tag, action.data))  # type: ignore[union-attr]
                except EventBusError as exc:
                    self.complaints.refuse("own-event", f"could not fire {action.tag}: {exc}")  # type: ignore
            elif kind is ms.Refuse:
                refusal: ms.Refuse = action  # type: ignore[assignment]
                group = f"{refusal.kind} {refusal.who}" if refusal.who else refusal.kind
                self.complaints.refuse(group, refusal.message)
            else:
                log.log(action.level, "%s", action.message)  # type: ignore[union-attr]
        if relayed:
            self.origins.note(relayed)  # type: ignore[union-attr]  # before the journal has them
        if frames:
            self.bus.publish_frames(frames)  # before the acks: an acked event is on the bus (and journaled)
        send = self.link_socket.send_multipart
        for message in sends:
            send(message)
        return bool(sends)

    # -- control verbs --------------------------------------------------------------

    def _key_verb(self, args: Any) -> Any:
        if not isinstance(args, dict) or args.get("op") not in keys.OPS:
            raise ValueError(f"expected {{'op': {'|'.join(keys.OPS)}, 'id': <minion id>}}")
        if args["op"] == keys.OP_LIST:
            return self.keys.listing()
        changes = []
        try:
            for change in self.keys.change(args["op"], args.get("id")):
                changes.append(change)
        except UnknownKeyError as exc:
            raise ValueError(str(exc)) from None
        finally:
            # The files have changed: the sessions follow, a bounded number each turn of the loop.
            self._key_changes.extend(changes)
            self._admit_some()
        return [change.minion_id for change in changes]

    def _admit_some(self) -> None:
        """Act on up to ``KEY_CHANGES_PER_TURN`` key changes; the rest on the loop's next turns."""
        pending = self._key_changes
        now = time.monotonic()
        actions: list[ms.Action] = []
        for _ in range(min(len(pending), KEY_CHANGES_PER_TURN)):
            actions += self.machine.key_changed(pending.popleft(), now)
        self._run(actions)
        if pending and not self._admitting:
            self._admitting = True
            self.loop.call_later(0, self._admit_next)

    def _admit_next(self) -> None:
        self._admitting = False
        self._admit_some()

    def _fire_verb(self, args: Any) -> dict:
        if not isinstance(args, dict) or not isinstance(args.get("target"), str):
            raise ValueError("expected {'tag': str, 'data': dict, 'target': glob}")
        raw_tag, raw_data = payload.pack_event(args.get("tag"), args.get("data"), self.max_event_size)
        job, actions = self.machine.fire(args["target"], wire.publish_frame(raw_tag, raw_data), time.monotonic())
        self._run(actions)
        return job

    def _fire_status_verb(self, args: Any) -> dict:
        status = self.machine.fire_jobs.status(args.get("job") if isinstance(args, dict) else None)  # type: ignore[arg-type]
        if status is None:
            raise ValueError("no such fire job (it may have expired)")
        return status

    def _link_verb(self, _args: Any) -> dict:
        return {**self.machine.status(), "refused": self.complaints.count, "throttled": self.machine.throttled}

    def close(self) -> None:
        for sock in (self.link_socket, self.offer_socket):
            self.loop.remove_reader(sock)
            sock.close(0)
        self.zap.close()
