"""The sockets of a minion's link to one of its masters: the key offer, the CURVE link and its monitor.

``eventbus.daemon.link.minion`` makes one per master of the list and decides
with ``MinionMasters`` what to do; this class opens, reads and closes one
master's sockets, handing what they bring to that master's ``MinionSession``
and the resulting actions back to the minion (``run``).

A rebuilt link reconnects after a random 100 to 1,100 ms (libzmq then backs
off up to 5 s), so a master that restarts under thousands of minions is not
met by all of them in the same instant.
"""
from __future__ import annotations

import random
import time
from typing import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

from eventbus.daemon.link import protocol
from eventbus.daemon.link import minion_session as ms
from eventbus.daemon.loop import Loop

MONITORED = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
             | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
RECONNECT_FIRST_MS = (100, 1100)  # the first reconnect's delay is drawn from this range ...
RECONNECT_MAX_MS = 5000           # ... and libzmq doubles it up to this


class MasterConnection:
    """One master's sockets; ``run`` carries out the actions its session returns."""

    def __init__(self, session: ms.MinionSession, context: zmq.Context, loop: Loop, public_key: bytes,
                 secret_key: bytes, max_message: int, run: Callable[[list], None]) -> None:
        self.session = session
        self.address = session.address
        self.context = context
        self.loop = loop
        self.public_key = public_key
        self.secret_key = secret_key
        self.max_message = max_message
        self.run = run
        self.link_socket: zmq.Socket | None = None
        self.monitor_socket: zmq.Socket | None = None
        self.offer_socket: zmq.Socket | None = None

    # -- the master's key offer -----------------------------------------------------

    def ask_key(self) -> None:
        """Ask the master's key offer for its public key (first contact, or to explain a failed handshake)."""
        self._close_offer()
        self.offer_socket = self.context.socket(zmq.DEALER)
        self.offer_socket.setsockopt(zmq.LINGER, 0)
        self.offer_socket.setsockopt(zmq.MAXMSGSIZE, 1024)
        self.offer_socket.connect(self.address.publish_endpoint)
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
        self.run(self.session.key_offered(frames, time.monotonic()))

    # -- the link -------------------------------------------------------------------

    def connect(self) -> None:
        self._disconnect()
        sock = self.context.socket(zmq.DEALER)
        sock.curve_serverkey = self.session.master_key.encode()  # type: ignore[union-attr]
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, random.randint(*RECONNECT_FIRST_MS))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        # No ZMTP heartbeats: libzmq 4.3 aborts a master that gets one on a connection whose receive queue was
        # full when its peer closed it (zeromq/libzmq#4364). The session's own pings find a dead master.
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        self.monitor_socket = sock.get_monitor_socket(MONITORED)
        sock.connect(self.address.ret_endpoint)
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

    def close(self) -> None:
        """Close every socket of this master."""
        self._disconnect()
        self._close_offer()

    def send(self, frames: list[bytes]) -> bool:
        if self.link_socket is None:
            return False
        try:
            self.link_socket.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def pump(self) -> None:
        """Send spooled batches while the connection takes them."""
        session = self.session
        while (batch := session.next_batch()) is not None:
            if not self.send(batch.frames):
                return
            session.batch_sent(batch.last)

    def _on_monitor(self) -> None:
        while self.monitor_socket is not None and self.monitor_socket.poll(0):
            event = parse_monitor_message(self.monitor_socket.recv_multipart())["event"]
            now = time.monotonic()
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.run(self.session.handshake_succeeded(now))
            elif event == zmq.EVENT_DISCONNECTED:
                self.run(self.session.disconnected(now))
            else:
                self.run(self.session.handshake_failed(now))

    def _on_link(self) -> None:
        receive = self.session.receive
        for _ in range(256):
            if self.link_socket is None:
                return
            try:
                frames = self.link_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.run(receive(frames, time.monotonic()))
