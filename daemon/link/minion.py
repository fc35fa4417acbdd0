"""The minion's side of the link: the sockets and timers around ``eventbus.daemon.link.minion_session``.

Relayed events come in on ``relay.ipc`` (``fire_master``) or the ``relay``
control verb (``eventbus send``), go to the spool, and leave from it in
batches over a CURVE DEALER to the master's ``ret_port`` as soon as the
master has welcomed this minion; each batch's ack frees it from the spool.
The master's ``last`` seq in its welcome says where to resume after any
reconnect, so a cut link or a restart on either side loses and repeats
nothing. Heartbeats: a ping every interval, and a master silent for two
intervals is taken for dead and the connection is rebuilt.

What to do when is ``MinionSession``'s call; this class owns the sockets,
reads them, tells the machine and carries out its actions.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from eventbus.daemon.link import protocol
from eventbus.daemon.link import minion_session as ms
from eventbus.daemon.bus import Bus
from eventbus.refusallog import Complaints
from eventbus.daemon.loop import Loop
from eventbus.daemon.link.spool import Spool
from eventbus import keys
from eventbus.bus import relay, wire
from eventbus.config import MinionConfig
from eventbus.errors import ConfigError, InvalidEventError

log = logging.getLogger(__name__)

INTAKE_BATCH = 1024

MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
             | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class MinionLink:
    """This minion's link to its master."""

    def __init__(self, settings: MinionConfig, context: zmq.Context, loop: Loop, bus: Bus) -> None:
        self.settings = settings
        self.context = context
        self.loop = loop
        self.bus = bus
        self.complaints = Complaints(log)
        if settings.master_pubkey is not None and not keys.valid_key(settings.master_pubkey):
            raise ConfigError(f"{settings.source}: key 'master_pubkey' has value {settings.master_pubkey!r}; "
                              "expected the master's CURVE public key (40 Z85 characters)",
                              key="master_pubkey", value=settings.master_pubkey)
        self.public_key, self.secret_key = keys.key_pair(settings.pki_dir, "minion")
        self.spool = Spool(settings.cachedir / "spool", settings.spool_max_events)
        if len(self.spool):
            log.info("%d relayed events wait in the spool for the master", len(self.spool))
        master_key = settings.master_pubkey or keys.pinned_master_key(settings.pki_dir)
        self.machine = ms.MinionSession(settings, self.spool, self.public_key, master_key, time.monotonic())
        self.link_socket: zmq.Socket | None = None
        self.monitor_socket: zmq.Socket | None = None
        self.offer_socket: zmq.Socket | None = None

        self.relay_endpoint = relay.relay_endpoint(settings.sock_dir)
        old_umask = os.umask(0o077)
        try:
            self.relay_socket = context.socket(zmq.PULL)
            self.relay_socket.setsockopt(zmq.RCVHWM, 10_000)
            self.relay_socket.setsockopt(zmq.MAXMSGSIZE, settings.max_event_size + 4096)
            self.relay_socket.setsockopt(zmq.LINGER, 0)
            self.relay_socket.bind(self.relay_endpoint)
        finally:
            os.umask(old_umask)
        loop.add_reader(self.relay_socket, self._on_relay)
        bus.register_verb(wire.VERB_RELAY, self._relay_verb)
        bus.register_verb(wire.VERB_LINK, lambda _args: self.machine.status())

        self._run(self.machine.start(time.monotonic()))
        loop.call_later(self.machine.heartbeat, self._tick)
        loop.call_every(1.0, self.spool.sync)

    @property
    def state(self) -> ms.LinkState:
        return self.machine.state

    def _run(self, actions: list[ms.Action]) -> None:
        """Carry out the machine's actions, in order."""
        for action in actions:
            kind = type(action)
            if kind is ms.Pump:
                self._pump()
            elif kind is ms.Send:
                self._send(action.frames)  # type: ignore[union-attr]
            elif kind is ms.ResumeAfter:
                self.loop.call_later(action.delay, lambda: self._run(self.machine.resume()))  # type: ignore[union-attr]
            elif kind is ms.PublishFrame:
                self.bus.publish_frame(action.frame)  # type: ignore[union-attr]
            elif kind is ms.Refuse:
                self.complaints.refuse(action.kind, action.message)  # type: ignore[union-attr]
            elif kind is ms.Note:
                log.log(action.level, "%s", action.message)  # type: ignore[union-attr]
            elif kind is ms.Connect:
                self._connect()
            elif kind is ms.AskKey:
                self._ask_key()
            elif kind is ms.PinKey:
                keys.pin_master_key(self.settings.pki_dir, action.key)  # type: ignore[union-attr]

    # -- the master's key offer -----------------------------------------------------

    def _ask_key(self) -> None:
        """Ask the master's key offer for its public key (first contact, or to explain a failed handshake)."""
        self._close_offer()
        self.offer_socket = self.context.socket(zmq.DEALER)
        self.offer_socket.setsockopt(zmq.LINGER, 0)
        self.offer_socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        self.offer_socket.connect(f"tcp://{self.settings.master}:{self.settings.publish_port}")
        self.offer_socket.send(protocol.KEY_OFFER)
        self.loop.add_reader(self.offer_socket, self._on_offer)

    def _close_offer(self) -> None:
        if self.offer_socket is not None:
            self.loop.remove_reader(self.offer_socket)
            self.offer_socket.close(0)
            self.offer_socket = None

    def _on_offer(self) -> None:
        assert self.offer_socket is not None
        try:
            frames = self.offer_socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        self._close_offer()
        self._run(self.machine.key_offered(frames, time.monotonic()))

    # -- the link -------------------------------------------------------------------

    def _connect(self) -> None:
        self._disconnect()
        sock = self.context.socket(zmq.DEALER)
        sock.curve_serverkey = self.machine.master_key.encode()  # type: ignore[union-attr]
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key
        heartbeat = self.machine.heartbeat
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(heartbeat * 3000))
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_event_size + 4096)
        self.monitor_socket = sock.get_monitor_socket(MONITORED)
        sock.connect(f"tcp://{self.settings.master}:{self.settings.ret_port}")
        self.link_socket = sock
        self.loop.add_reader(sock, self._on_link)
        self.loop.add_reader(self.monitor_socket, self._on_monitor)

    def _disconnect(self) -> None:
        if self.link_socket is not None:
            self.loop.remove_reader(self.link_socket)
            self.loop.remove_reader(self.monitor_socket)
            self.link_socket.disable_monitor()
            self.monitor_socket.close(0)  # type: ignore[union-attr]
            self.link_socket.close(0)
            self.link_socket = self.monitor_socket = None

    def _send(self, frames: list[bytes]) -> bool:
        if self.link_socket is None:
            return False
        try:
            self.link_socket.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _pump(self) -> None:
        """Send spooled batches while the connection takes them."""
        machine = self.machine
        while (batch := machine.next_batch()) is not None:
            if not self._send(batch.frames):
                return
            machine.batch_sent(batch.last)

    def _on_monitor(self) -> None:
        while self.monitor_socket is not None and self.monitor_socket.poll(0):
            event = parse_monitor_message(self.monitor_socket.recv_multipart())["event"]
            now = time.monotonic()
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._run(self.machine.handshake_succeeded(now))
            elif event == zmq.EVENT_DISCONNECTED:
                self._run(self.machine.disconnected(now))
            else:
                self._run(self.machine.handshake_failed(now))

    def _on_link(self) -> None:
        receive = self.machine.receive
        for _ in range(256):
            if self.link_socket is None:
                return
            try:
                frames = self.link_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._run(receive(frames, time.monotonic()))

    def _tick(self) -> None:
        # Rescheduled each time: the master's welcome may lower the interval.
        self.loop.call_later(self.machine.heartbeat, self._tick)
        self._run(self.machine.tick(time.monotonic()))

    # -- relay intake ---------------------------------------------------------------

    def _on_relay(self) -> None:
        recv = self.relay_socket.recv
        frames = []
        for _ in range(INTAKE_BATCH):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            token = wire.barrier_token(frame)
            if token is not None:
                # A closing fire_master handle's last frame: what it sent before is spooled first.
                if frames:
                    self._run(self.machine.intake(frames))
                    frames = []
                self.bus.note_barrier(token)
                continue
            frames.append(frame)
        if frames:
            self._run(self.machine.intake(frames))

    def _relay_verb(self, args: Any) -> dict:
        try:
            result, actions = self.machine.relay(args)
        except InvalidEventError as exc:
            if exc.reason == "reserved":
                self.complaints.refuse("relay", f"refused to relay an event: {exc}")
            raise
        self._run(actions)
        return result

    def close(self) -> None:
        self.loop.remove_reader(self.relay_socket)
        self.relay_socket.close(0)
        try:
            os.unlink(self.relay_endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass
        self._disconnect()
        self._close_offer()
        self.spool.close()
