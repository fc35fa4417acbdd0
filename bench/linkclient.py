"""A raw link client with a CURVE key of its own: it can send a master anything a minion could, right or wrong.

``RawMinion`` is a DEALER that speaks the link protocol by hand, for forged
and replayed messages; ``Rogue`` adds what a minion with an accepted key
could send that no honest one does. ``event_frame`` and
``malformed_messages`` build such messages. The link tests and the rogue
minion benchmark (``bench.rogue``) share them; this module imports nothing
from ``tests``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.auth

from bench.procs import Node, short_tmpdir
from eventbus import keys
from eventbus.daemon.link import protocol


def event_frame(tag: str, data: Any) -> bytes:
    """A minion's ``tag NUL msgpack`` relay frame, built by hand (so it may be wrong on purpose)."""
    return tag.encode() + b"\x00" + msgpack.packb(data, use_bin_type=True)


def malformed_messages() -> list[list[bytes]]:
    """Link messages the master must refuse: cut, unknown, garbage, or the master's own kinds."""
    return [
        [b""],
        [b"gossip", b"x"],
        [protocol.EVENTS],
        [protocol.EVENTS, b"\x00\x01"],
        [protocol.FIRED],
        [protocol.FIRED, b"\x01\x02\x03"],
        [protocol.HELLO, b"\xc1\xc1"],
        [protocol.HELLO, msgpack.packb([1, 2])],
        [protocol.HELLO, msgpack.packb({"id": "a/b*"})],
        protocol.ack(1),
        protocol.welcome("accept", 0, 1.0),
        protocol.fire(1, event_frame("x", {})),
        protocol.resend(1),
        protocol.WHO_MESSAGE,
        protocol.PONG_MESSAGE,
    ]


class RawMinion:
    """A hand-driven link client with its own CURVE key: for forged and replayed messages."""

    def __init__(self, master: Node, minion_id: str, key_dir: Path | None = None) -> None:
        settings = master.settings
        self.minion_id = minion_id
        self.key_dir = key_dir or short_tmpdir("ebk")
        self.public, secret = keys.key_pair(self.key_dir, "raw")
        server_key, _ = zmq.auth.load_certificate(settings.pki_dir / "master.key")
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.curve_serverkey = server_key
        self.socket.curve_publickey = self.public
        self.socket.curve_secretkey = secret
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(f"tcp://127.0.0.1:{settings.ret_port}")

    def send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def recv(self, timeout: float = 5.0) -> protocol.Message | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        return protocol.parse(self.socket.recv_multipart())

    def expect(self, kind: bytes, timeout: float = 5.0) -> protocol.Message:
        """The next message of ``kind``, skipping pongs and others."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise AssertionError(f"no {kind!r} from the master within {timeout} s")
            if message.kind == kind:
                return message

    def hello(self) -> protocol.Message:
        self.send(protocol.hello(self.minion_id))
        return self.expect(protocol.WELCOME)

    def close(self) -> None:
        self.socket.close(0)
        self.context.term()


class Rogue(RawMinion):
    """An accepted minion's key in the hands of someone who does not play by the rules."""

    def sync(self, timeout: float = 10.0) -> None:
        """Return once the master has handled everything sent before (it answers a connection in order).

        The ping goes again each second: one sent just before the master cut the connection is lost with it.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.send(protocol.PING_MESSAGE)
            try:
                self.expect(protocol.PONG, min(1.0, max(0.0, deadline - time.monotonic())))
                return
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise

    def drain(self) -> list[protocol.Message]:
        """Every message waiting from the master, without blocking."""
        got = []
        while self.socket.poll(0):
            got.append(protocol.parse(self.socket.recv_multipart()))
        return got

    def batch(self, first: int, floor: int, frames: list[bytes], timeout: float = 10.0) -> protocol.Message:
        """Send an events message and return the master's answer to it (ack or resend)."""
        self.drain()
        self.send(protocol.events(first, floor, frames))
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise AssertionError(f"no answer to a batch from {first} within {timeout} s")
            if message.kind in (protocol.ACK, protocol.RESEND):
                return message
