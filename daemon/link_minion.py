"""The minion's side of the link: pin the master's key, spool relayed events, deliver them once.

Relayed events come in on ``relay.ipc`` (``fire_master``) or the ``relay``
control verb (``eventbus send``), go to the spool, and leave from it in
batches over a CURVE DEALER to the master's ``ret_port`` as soon as the
master has welcomed this minion; each batch's ack frees it from the spool.
The master's ``last`` seq in its welcome says where to resume after any
reconnect, so a cut link or a restart on either side loses and repeats
nothing. Heartbeats: a ping every interval, and a master silent for two
intervals is taken for dead and the connection is rebuilt.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from daemon import keys, linkproto
from daemon.bus import Bus
from daemon.complaints import Complaints
from daemon.loop import Loop
from daemon.spool import Spool
from eventbus import payload, relay
from eventbus.config import MinionConfig
from eventbus.errors import ConfigError, InvalidEventError, ProtocolError

log = logging.getLogger(__name__)

BATCH_EVENTS = 1000
BATCH_BYTES = 512 * 1024
IN_FLIGHT = 20_000
KEY_CHECK_EVERY = 30.0
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
        self.minion_id = settings.id
        self.heartbeat = settings.heartbeat_interval
        self.complaints = Complaints(log)
        if settings.master_pubkey is not None and not keys.valid_key(settings.master_pubkey):
            raise ConfigError(f"{settings.source}: key 'master_pubkey' has value {settings.master_pubkey!r}; "
                              "expected the master's CURVE public key (40 Z85 characters)",
                              key="master_pubkey", value=settings.master_pubkey)
        self.public_key, self.secret_key = keys.key_pair(settings.pki_dir, "minion")
        self.spool = Spool(settings.cachedir / "spool", settings.spool_max_events)
        if len(self.spool):
            log.info("%d relayed events wait in the spool for the master", len(self.spool))
        self.master_address = settings.master
        self.master_key = settings.master_pubkey or keys.pinned_master_key(settings.pki_dir)
        self.state = "connecting"      # connecting, hello, accept, pend, reject, denied
        self.sent = self.spool.head    # newest seq handed to the link
        self.last_heard = time.monotonic()
        self.last_progress = time.monotonic()
        self._key_checked = 0.0
        self._mismatch_checked = 0.0
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
        bus.register_verb(relay.VERB_RELAY, self._relay_verb)
        bus.register_verb(b"link", self._link_verb)

        if self.master_key:
            self._connect()
        else:
            log.info("no master key pinned yet: asking %s:%d for it", self.master_address, settings.publish_port)
            self._ask_key()
        loop.call_later(self.heartbeat, self._tick)
        loop.call_every(1.0, self.spool.sync)

    # -- the master's key -----------------------------------------------------------

    def _ask_key(self) -> None:
        """Ask the master's key offer for its public key (first contact, or to explain a failed handshake)."""
        self._key_checked = time.monotonic()
        if self.offer_socket is not None:
            self.loop.remove_reader(self.offer_socket)
            self.offer_socket.close(0)
        self.offer_socket = self.context.socket(zmq.DEALER)
        self.offer_socket.setsockopt(zmq.LINGER, 0)
        self.offer_socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        self.offer_socket.connect(f"tcp://{self.master_address}:{self.settings.publish_port}")
        self.offer_socket.send(b"key")
        self.loop.add_reader(self.offer_socket, self._on_offer)

    def _on_offer(self) -> None:
        assert self.offer_socket is not None
        try:
            frames = self.offer_socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        self.loop.remove_reader(self.offer_socket)
        self.offer_socket.close(0)
        self.offer_socket = None
        offered = frames[1] if len(frames) == 2 and frames[0] == b"key" else b""
        if not keys.valid_key(offered):
            log.error("the master at %s:%d offered no valid public key", self.master_address,
                      self.settings.publish_port)
            return
        offered_key = offered.decode()
        if self.master_key is None:
            keys.pin_master_key(self.settings.pki_dir, offered_key)
            log.info("pinned the master's public key %s (first contact)", offered_key)
            self.master_key = offered_key
            self._connect()
        elif offered_key != self.master_key:
            where = ("config key master_pubkey" if self.settings.master_pubkey
                     else str(self.settings.pki_dir / keys.PINNED_MASTER))
            log.error("refusing the master at %s: its public key changed from %s (pinned in %s) to %s; "
                      "if that change is intended, remove the pinned key and restart the minion",
                      self.master_address, self.master_key, where, offered_key)

    # -- the link -------------------------------------------------------------------

    def _connect(self) -> None:
        self._disconnect()
        sock = self.context.socket(zmq.DEALER)
        sock.curve_serverkey = self.master_key.encode()  # type: ignore[union-attr]
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(self.heartbeat * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(self.heartbeat * 3000))
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_event_size + 4096)
        self.monitor_socket = sock.get_monitor_socket(MONITORED)
        sock.connect(f"tcp://{self.master_address}:{self.settings.ret_port}")
        self.link_socket = sock
        self.state = "connecting"
        self.last_heard = time.monotonic()
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
        self.sent = self.spool.head

    def _send(self, frames: list[bytes]) -> bool:
        try:
            self.link_socket.send_multipart(frames, zmq.NOBLOCK)  # type: ignore[union-attr]
            return True
        except zmq.Again:
            return False

    def _on_monitor(self) -> None:
        while self.monitor_socket is not None and self.monitor_socket.poll(0):
            event = parse_monitor_message(self.monitor_socket.recv_multipart())["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                log.info("connected to the master at %s:%d", self.master_address, self.settings.ret_port)
                self.state = "hello"
                self.last_heard = time.monotonic()
                self._send(linkproto.hello(self.minion_id))
            elif event == zmq.EVENT_DISCONNECTED:
                if self.state != "connecting":
                    log.warning("lost the connection to the master; reconnecting")
                self.state = "connecting"
                self.sent = self.spool.head
            else:
                self.complaints.refuse("handshake", f"the CURVE handshake with the master at "
                                                    f"{self.master_address}:{self.settings.ret_port} failed")
                if time.monotonic() - self._mismatch_checked > KEY_CHECK_EVERY:
                    self._mismatch_checked = time.monotonic()
                    self._ask_key()

    def _on_link(self) -> None:
        for _ in range(256):
            try:
                frames = self.link_socket.recv_multipart(zmq.NOBLOCK)  # type: ignore[union-attr]
            except zmq.Again:
                return
            self.last_heard = time.monotonic()
            try:
                message = linkproto.parse(frames)
            except ProtocolError as exc:
                self.complaints.refuse("protocol", f"ignored a message from the master: {exc}")
                continue
            self._dispatch(message)

    def _dispatch(self, message: linkproto.Message) -> None:
        kind = message.kind
        if kind == linkproto.ACK:
            self.spool.ack(message.value)
            self.last_progress = time.monotonic()
            self._pump()
        elif kind == linkproto.WELCOME:
            self._welcome(message.value)
        elif kind == linkproto.FIRE:
            self._fire(message.value, message.frames[0])
        elif kind == linkproto.RESEND:
            self.spool.ack(message.value)
            self.sent = self.spool.head
            self._pump()
        elif kind == linkproto.WHO:
            self.state = "hello"
            self._send(linkproto.hello(self.minion_id))
        elif kind != linkproto.PONG:
            self.complaints.refuse("protocol", f"ignored a {kind.decode()!r} message from the master")

    def _welcome(self, body: dict) -> None:
        result = body["result"]
        heartbeat = body.get("heartbeat")
        if isinstance(heartbeat, (int, float)) and 0 < heartbeat < self.heartbeat:
            self.heartbeat = float(heartbeat)
        if result != self.state:
            level = logging.INFO if result == "accept" else logging.WARNING
            log.log(level, "the master answered %r to this minion (id %r, key %s)", result,
                    self.minion_id, self.public_key.decode())
        self.state = result
        if result != "accept":
            return
        last = body.get("last")
        if isinstance(last, int):
            self.spool.ack(last)
        self.sent = self.spool.head
        self.last_progress = time.monotonic()
        self._pump()

    def _fire(self, job_id: int, frame: bytes) -> None:
        try:
            payload.check_published(frame, self.settings.max_event_size)
        except InvalidEventError as exc:
            self.complaints.refuse("fire", f"refused a fire from the master: {exc}")
            return
        self.bus.publish_frame(frame)
        self._send(linkproto.fired(job_id))

    def _pump(self) -> None:
        """Send spooled events, in batches, while the master has room for them."""
        if self.state != "accept":
            return
        spool = self.spool
        while self.sent - spool.head < IN_FLIGHT:
            batch = spool.read(self.sent, BATCH_EVENTS, BATCH_BYTES)
            if not batch:
                return
            if not self._send(linkproto.events(batch[0][0], spool.head, [frame for _, frame in batch])):
                return
            self.sent = batch[-1][0]

    def _tick(self) -> None:
        # Rescheduled each time: the master's welcome may lower the interval.
        self.loop.call_later(self.heartbeat, self._tick)
        now = time.monotonic()
        if self.link_socket is None:
            if self.master_key is None and now - self._key_checked > self.heartbeat * 2:
                self._ask_key()
            return
        if self.state != "connecting":
            self._send(linkproto.PING_MESSAGE)
            if now - self.last_heard > 2 * self.heartbeat + 0.5:
                log.warning("the master has not answered for %.1f s; reconnecting", now - self.last_heard)
                self._connect()
                return
        if self.state == "accept" and self.sent > self.spool.head and now - self.last_progress > 2 * self.heartbeat:
            self.sent = self.spool.head
            self.last_progress = now
        self._pump()

    # -- relay intake ---------------------------------------------------------------

    def _on_relay(self) -> None:
        recv = self.relay_socket.recv
        check = payload.check_published
        limit = self.settings.max_event_size
        frames = []
        for _ in range(INTAKE_BATCH):
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                cut = check(frame, limit)
                reason = relay.refused_tag(frame[:cut].decode(), self.minion_id)
            except InvalidEventError as exc:
                reason = str(exc)
            if reason is not None:
                self.complaints.refuse("relay", f"refused to relay an event: {reason}")
                continue
            frames.append(frame)
        if frames:
            self._spool(frames)

    def _spool(self, frames: list[bytes]) -> None:
        dropped = self.spool.append(frames)
        if dropped:
            self.complaints.refuse("spool", f"the relay spool is full (spool_max_events "
                                            f"{self.settings.spool_max_events}): dropped the {dropped} oldest "
                                            f"events, {self.spool.dropped} in all")
        self._pump()

    def _relay_verb(self, args: Any) -> dict:
        if not isinstance(args, dict):
            raise ValueError("expected {'tag': str, 'data': dict}")
        raw_tag, raw_data = payload.pack_event(args.get("tag"), args.get("data"),
                                               self.settings.max_event_size, add_stamp=False)
        reason = relay.refused_tag(args["tag"], self.minion_id)
        if reason is not None:
            self.complaints.refuse("relay", f"refused to relay an event: {reason}")
            raise ValueError(reason)
        self._spool([raw_tag + b"\x00" + raw_data])
        return {"seq": self.spool.next_seq - 1, "spooled": len(self.spool), "master": self.state}

    def _link_verb(self, _args: Any) -> dict:
        return {"state": self.state, "spooled": len(self.spool), "dropped": self.spool.dropped,
                "head": self.spool.head, "next_seq": self.spool.next_seq, "master_key": self.master_key}

    def close(self) -> None:
        self.loop.remove_reader(self.relay_socket)
        self.relay_socket.close(0)
        try:
            os.unlink(self.relay_endpoint[len("ipc://"):])
        except FileNotFoundError:
            pass
        self._disconnect()
        if self.offer_socket is not None:
            self.offer_socket.close(0)
        self.spool.close()
