"""The master's ZAP handler: CURVE peers are let through with their public key as User-Id.

libzmq asks the handler bound at ``inproc://zeromq.zap.01`` (in the daemon's
context) about every handshake on a socket with a ZAP domain. A CURVE
handshake has already proven that the peer owns the secret of the public
key it presents; the handler passes that key on as the connection's
``User-Id``, which the link reads from every message. So a minion's id is
bound to the key it proved, never to what its messages say. Whether a key
may relay (accepted, pending, rejected) is the key store's call at
``hello``, which needs the id too and must fire ``salt/auth`` either way.
Anything other than CURVE is refused here.
"""
from __future__ import annotations

import logging

import zmq
import zmq.utils.z85

from eventbus.refusallog import Complaints
from eventbus.daemon.loop import Loop

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
DOMAIN = b"eventbus"
# Requests answered per turn of the loop (about 20 µs each): a reconnect storm's handshakes hold no turn for long.
ZAP_PER_TURN = 64


def answer(request: list[bytes]) -> list[bytes]:
    """The reply frames to one ZAP request (routing frames included)."""
    # [route..., b"", version, request_id, domain, address, identity, mechanism, *credentials]
    split = request.index(b"")
    route, body = request[:split + 1], request[split + 1:]
    if len(body) < 6 or body[0] != ZAP_VERSION:
        return route + [ZAP_VERSION, body[1] if len(body) > 1 else b"", b"400", b"bad ZAP request", b"", b""]
    request_id, mechanism, credentials = body[1], body[5], body[6:]
    if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
        return route + [ZAP_VERSION, request_id, b"200", b"OK", zmq.utils.z85.encode(credentials[0]), b""]
    return route + [ZAP_VERSION, request_id, b"400", b"CURVE required", b"", b""]


class ZapHandler:
    """Answers the daemon context's ZAP requests on the loop."""

    def __init__(self, context: zmq.Context, loop: Loop) -> None:
        self.loop = loop
        self.complaints = Complaints(log)
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        loop.add_reader(self.socket, self._on_request, own=True)

    def _on_request(self) -> bool | None:
        for _ in range(ZAP_PER_TURN):
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = answer(request)
            except ValueError:
                self.complaints.refuse("zap", "ignored a malformed ZAP request")
                continue
            if reply[-4] != b"200":
                self.complaints.refuse("zap", f"refused a link connection: {reply[-3].decode()}")
            self.socket.send_multipart(reply)
        return True  # a turn's worth answered: the loop calls again on its next turn

    def close(self) -> None:
        self.loop.remove_reader(self.socket)
        self.socket.close(0)
